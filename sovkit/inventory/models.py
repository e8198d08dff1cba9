"""Pydantic v2 models of a site inventory (``apiVersion: sovkit.dev/v1``, ``kind: Site``).

Field names are snake_case in YAML as in Python. Every model forbids unknown
keys so a misspelt field is an error, never silently ignored. Cross-references
between sections (a deployment naming a model, a host naming a rack) are
checked in :mod:`sovkit.inventory.crossref`, where the catalog is known.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from sovkit import identifiers
from sovkit.inventory.codes import country_codes, country_of, is_jurisdiction, suggest_jurisdiction
from sovkit.signing.keyring import Time

API_VERSION = "sovkit.dev/v1"

_NAME_RE = identifiers.NAME
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def _did_you_mean(value: str) -> str:
    better = suggest_jurisdiction(value)
    return f"; did you mean {better!r}?" if better else ""


def _jurisdiction(value: str) -> str:
    if not is_jurisdiction(value):
        raise ValueError(
            f"{value!r} is not an ISO 3166-1 alpha-2 country or ISO 3166-2 subdivision code (e.g. KR, DE, KR-11)"
            + _did_you_mean(value)
        )
    return value


def _country(value: str) -> str:
    if value not in country_codes():
        raise ValueError(
            f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. KR, DE, FR)" + _did_you_mean(value)
        )
    return value


PATH_HINT = ("a path is components of letters, digits and '. _ + @ , = ~ : -' separated by '/', "
             "none of them '.' or '..' (no spaces, quotes, '$', '{', '%', ';', '|', '&' or backquotes)")


def _refused(detail: str, hint: str = PATH_HINT) -> PydanticCustomError:
    """A validation error the loader shows with ``hint`` (the detail goes through context: never formatted)."""
    return PydanticCustomError("sovkit_value", "{detail}", {"detail": detail, "hint": hint})


def _path_error(value: str, what: str) -> PydanticCustomError:
    bad = "".join(sorted({c for c in value if not re.fullmatch(r"[A-Za-z0-9._+@,=~:/-]", c)}))
    if bad:
        return _refused(f"{identifiers.describe(value)} is not a valid {what}: {bad!r} not allowed")
    if any(part in (".", "..") for part in value.split("/")):
        return _refused(f"{identifiers.describe(value)} is not a valid {what}: '.' and '..' components "
                        "are not allowed")
    return _refused(f"{identifiers.describe(value)} is not a valid {what}")


def _relative_path(value: str) -> str:
    """A path inside its root (inventory dir or artifact store): no leading '/', no '..' escape."""
    if value.startswith("/"):
        raise _refused(f"{identifiers.describe(value)} must be a relative path inside its root (no leading '/')")
    if not identifiers.safe_path(value, absolute=False):
        raise _path_error(value, "relative path")
    return value


def _absolute_path(value: str) -> str:
    """A path on a host (interpreter, install prefix): absolute, plain components, no '..'."""
    if not value.startswith("/"):
        raise _refused(f"{identifiers.describe(value)} must be an absolute path (starting with '/')")
    if not identifiers.safe_path(value, absolute=True):
        raise _path_error(value, "absolute path")
    return value


def _any_path(value: str) -> str:
    """Absolute, or relative to the inventory directory; either way plain components without '..'."""
    return _absolute_path(value) if value.startswith("/") else _relative_path(value)


_SCOPE_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def _address(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        # RFC 1123: a name's last label is never all digits, so "10.0.0.300" is a bad IP, not a host name.
        if not _HOSTNAME_RE.fullmatch(value) or value.rstrip(".").rsplit(".", 1)[-1].isdigit():
            raise _refused(f"{identifiers.describe(value)} is neither an IP address nor a valid host name",
                           "an IPv4/IPv6 address or an RFC 1123 host name (letters, digits, '-', '.')") from None
        return value
    scope = getattr(ip, "scope_id", None)
    if scope is not None and not _SCOPE_RE.fullmatch(scope):
        # Python accepts any text after '%' in an IPv6 address, and the address becomes ansible_host.
        raise _refused(f"{identifiers.describe(value)}: the IPv6 zone after '%' is not an interface name",
                       "an IPv6 zone is 1-32 letters, digits, '_', '.' or '-'")
    return value


# Every identifier that reaches Ansible, a host or a path has a strict pattern (sovkit/identifiers.py), so a
# `{{ … }}`, `{% … %}`, `$(…)`, `;`, a backquote, a newline or a '..' component is refused at validation with
# a located error. Free text (descriptions, reasons, URLs, licences) never reaches Ansible and stays free.
Name = Annotated[str, StringConstraints(pattern=_NAME_RE)]
CatalogId = Annotated[str, StringConstraints(pattern=_NAME_RE)]
Sha256 = Annotated[str, StringConstraints(pattern=identifiers.SHA256)]
Jurisdiction = Annotated[str, AfterValidator(_jurisdiction)]
Country = Annotated[str, AfterValidator(_country)]
RelPath = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_relative_path)]
AbsPath = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_absolute_path)]
AnyPath = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_any_path)]
Address = Annotated[str, AfterValidator(_address)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Version = Annotated[str, StringConstraints(pattern=identifiers.VERSION)]
Package = Annotated[str, StringConstraints(pattern=identifiers.PACKAGE)]
User = Annotated[str, StringConstraints(pattern=identifiers.USER)]
Connector = Annotated[str, StringConstraints(pattern=identifiers.CONNECTOR)]
Port = Annotated[int, Field(ge=1, le=65535)]

#: what each pattern allows, shown as the hint of a mismatch (keyed by the pattern the loader sees)
PATTERN_HINTS: dict[str, str] = {
    identifiers.SHA256: "a sha256 digest is 64 lowercase hex digits, without a 'sha256:' prefix "
                        "(see `sha256sum FILE`)",
    identifiers.NAME: "names are 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
    identifiers.VERSION: "a version is 1-64 letters, digits, '.', '+', '_' or '-', starting with a letter or digit",
    identifiers.PACKAGE: "a package is a bare PEP 508 name (letters, digits, '.', '_', '-'; no version specifier, "
                         "URL, extras or spaces)",
    identifiers.USER: "a user is a POSIX login name: 1-32 letters, digits, '.', '_' or '-', not starting with "
                      "a digit, '.' or '-'",
    identifiers.CONNECTOR: "a connector is 1-64 letters, digits, '_', '.' or '-', starting with a letter "
                           "(e.g. NixlConnector)",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Metadata(Strict):
    name: Name
    description: str = ""
    operator: str = ""
    labels: dict[str, str] = {}


class SiteJurisdiction(Strict):
    """Where the site physically is: a country and optionally its ISO 3166-2 region."""

    country: Country
    region: Jurisdiction | None = None

    @model_validator(mode="after")
    def _region_in_country(self) -> SiteJurisdiction:
        if self.region is not None and country_of(self.region) != self.country:
            raise ValueError(f"region {self.region} is not in country {self.country}")
        return self


class Transfer(Strict):
    """A recorded legal basis for personal data leaving the jurisdiction (GDPR Arts. 44-46)."""

    name: Name
    destination: Jurisdiction
    basis: Literal["adequacy", "scc", "bcr", "consent", "derogation"]
    reference: NonEmpty


class Residency(Strict):
    """What may leave the site, and to where; the policy pack judges every section against it."""

    allowed_jurisdictions: Annotated[list[Jurisdiction], Field(min_length=1)] = Field(
        description="Where data, models, logs, telemetry and backups may be (a country covers its regions)."
    )
    air_gapped: bool = Field(default=False, description="No egress at all: every endpoint must be on-site.")
    allowed_egress: list[NonEmpty] = Field(default=[], description="Destinations (host names or URLs) that egress "
                                           "endpoints may reach.")
    transfers: list[Transfer] = []


class TrustedKey(Strict):
    name: Name
    public_key: RelPath
    not_before: Time | None = Field(default=None, description="Signatures made before this time (ISO 8601 with a "
                                    "zone) are refused.")
    not_after: Time | None = Field(default=None, description="Signatures made after this time are refused (the "
                                   "key expired or was replaced).")


class TrustRoots(Strict):
    publishers: list[TrustedKey] = []
    vendors: list[TrustedKey] = []
    policy_bundles: list[TrustedKey] = Field(default=[], description="Keys (ECDSA P-256) trusted to sign OPA "
                                             "policy bundles: a `--policy-bundle` must be signed by one of them "
                                             "(`sovkit policy bundle --sign`); `--bundle-key` overrides them.")
    keyring: RelPath | None = Field(default=None, description="The operator's signed keyring (`sovkit keys "
                                    "revoke` writes it): its revocations apply to these keys too.")


class StoreCredentials(Strict):
    """Where the registry credentials are: never in the inventory, only the name of a variable or a file.

    The value is ``USER:PASSWORD`` (basic auth, or exchanged for a token where the registry asks for Bearer)
    or a bare bearer token.
    """

    env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")] | None = Field(
        default=None, description="Environment variable holding USER:PASSWORD or a token.")
    file: AnyPath | None = Field(default=None, description="File (relative to the inventory, or absolute) whose "
                                 "first line is USER:PASSWORD or a token.")

    @model_validator(mode="after")
    def _one_source(self) -> StoreCredentials:
        if (self.env is None) == (self.file is None):
            raise ValueError("credentials name exactly one of env or file")
        return self


def _no_password(value: str) -> str:
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
        raise ValueError("the state URL must not hold a password: use PGPASSWORD or a libpq passfile")
    return value


class StateBackend(Strict):
    """Where the site's state is kept: ``local`` (``.sovkit/`` beside the inventory) or ``postgres`` (a shared
    database, docs/state.md). The URL never holds the password (PGPASSWORD or a libpq passfile does)."""

    backend: Literal["local", "postgres"] = "local"
    url: Annotated[str, StringConstraints(pattern=r"^postgres(ql)?://[^\s'\"]{1,500}$"),
                   AfterValidator(_no_password)] | None = Field(
        default=None, description="postgres: postgresql://[USER@]HOST[:PORT]/DB[?sslmode=...] (no password).")
    url_env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")] | None = Field(
        default=None, description="postgres: environment variable holding the URL (e.g. SOVKIT_STATE_URL).")

    @model_validator(mode="after")
    def _postgres_has_url(self) -> StateBackend:
        if self.backend == "postgres" and (self.url is None) == (self.url_env is None):
            raise ValueError("a postgres state names exactly one of url or url_env")
        if self.backend == "local" and (self.url or self.url_env):
            raise ValueError("url and url_env are for backend: postgres")
        return self


class ArtifactStore(Strict):
    """Where artifacts come from.

    ``local``: a directory (relative to the inventory or absolute) that must hold
    every artifact — what `sovkit bundle import --store` fills. ``oci``: an OCI
    registry repository (`sovkit bundle import --registry` fills it); preflight
    pulls each artifact by digest into ``path`` (the controller's cache) and
    verifies digest and signature there before any host receives it.
    """

    kind: Literal["local", "oci"] = "local"
    path: AnyPath = Field(default="artifacts", description="local: the store directory; oci: the controller's "
                          "cache the registry's files are pulled into. Relative to the inventory (no '..') or "
                          "absolute; artifact paths below it are handed to Ansible.")
    url: Annotated[str, StringConstraints(pattern=r"^https://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?$")] | None = Field(
        default=None, description="oci: the registry, https://HOST[:PORT] (TLS only).")
    repository: Annotated[str, StringConstraints(
        pattern=r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")] | None = (
        Field(default=None, description="oci: the repository holding the site's artifacts."))
    tag: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")] = Field(
        default="sovkit-store", description="oci: the tag of the store manifest (file name -> digest) that "
        "`bundle import --registry` keeps; artifacts pinned by digest are pulled by digest.")
    ca: AnyPath | None = Field(default=None, description="oci: the site's CA file (PEM) the registry's TLS "
                               "certificate is verified against; without it, the system's CAs.")
    credentials: StoreCredentials | None = Field(default=None, description="oci: where the registry "
                                                 "credentials are (a variable or a file; never the values).")
    jurisdiction: Jurisdiction | None = None

    @model_validator(mode="after")
    def _oci_has_registry(self) -> ArtifactStore:
        if self.kind == "oci" and (self.url is None or self.repository is None or self.jurisdiction is None):
            raise ValueError("an oci artifact store needs url, repository and jurisdiction")
        if self.kind == "local" and (self.url or self.repository or self.ca or self.credentials):
            raise ValueError("url, repository, ca and credentials belong to an oci artifact store")
        return self


class Rack(Strict):
    name: Name
    power_budget_w: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        description="Power the rack may draw; `inventory show` compares the catalog TDP of its hosts with it."
    )
    location: str = ""


class SSH(Strict):
    user: User = Field(default="root", description="POSIX login name.")
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key: RelPath | None = None
    known_hosts: RelPath | None = Field(
        default=None,
        description="Pinned host keys (strict checking). Without it, keys are trusted on first use and "
        "kept in <state-dir>/known_hosts.",
    )


class AcceleratorSlot(Strict):
    """Identical accelerator cards in one host."""

    kind: CatalogId = Field(description="A catalog accelerator id (see Catalog ids).")
    count: Annotated[int, Field(ge=1, le=64)]
    firmware: Name | None = Field(default=None, description="The `firmware[]` entry pinned on these cards.")
    driver: Name | None = Field(default=None, description="The `drivers[]` entry (kernel driver package) these "
                                "cards need; installed and its module loaded before their firmware is flashed.")
    power_cap_w: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Power limit in watts set on every device of the slot after its firmware is "
        "read back (the vendor procedure's `power_cap`), then read back. Needs `firmware`; only for vendors whose "
        "tool has a power cap (NVIDIA); at most the catalog TDP when the catalog has one.")


class Artifact(Strict):
    path: RelPath
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class Host(Strict):
    name: Name
    rack: Name
    address: Address
    arch: Literal["aarch64", "x86_64"]
    cpu: CatalogId = Field(description="A catalog CPU id (see Catalog ids); must match `arch`.")
    connection: Literal["ssh", "local"] = "ssh"
    ssh: SSH = SSH()
    python_interpreter: AbsPath | None = Field(
        default=None, description="Python on the host used by Ansible and pip (default: discovered). An absolute "
        "path of plain components."
    )
    root: AnyPath | None = Field(
        default=None,
        description="Install prefix on the host (lab and demo hosts share one machine). Absolute; a local-connection"
        " host may give it relative to the inventory, and then it must stay inside the inventory directory (no "
        "'..', no symlink out of it).",
    )
    accelerators: list[AcceleratorSlot] = Field(default=[], description="Accelerator slots; device indexes "
                                                 "0..N-1 count through them in this order.")
    service_manager: Literal["systemd", "supervisor"] = Field(
        default="systemd", description="What runs the serving processes: systemd units, or sovkit's own process "
        "supervisor on hosts without systemd (demo and lab hosts)."
    )
    labels: dict[str, str] = {}

    @model_validator(mode="after")
    def _root_absolute(self) -> Host:
        if self.root is not None and not self.root.startswith("/") and self.connection != "local":
            raise ValueError(f"root {self.root!r} must be an absolute path on the host")
        return self


class Firmware(Strict):
    name: Name
    vendor: Name
    accelerator: CatalogId
    version: Version
    image: Artifact
    signature: RelPath | None = None


class Driver(Strict):
    """A kernel driver package: installed from the store, its module (re)loaded, the loaded version read back."""

    name: Name
    vendor: Name = Field(description="A `trust_roots.vendors` name: who signs the package; must be the vendor of "
                         "the accelerators that name this driver.")
    version: Version = Field(description="The version the loaded module reports (`/sys/module/MODULE/version`); "
                             "apply fails the host when it reports another.")
    module: Name = Field(description="The kernel module (`rebellions`, `rngd`, `nvidia`).")
    format: Literal["deb", "rpm", "runfile"] = Field(description="deb/rpm: installed with dpkg/rpm (one "
                                                     "transaction for all artifacts); runfile: the vendor's "
                                                     "installer script (exactly one artifact).")
    artifacts: Annotated[list[Artifact], Field(min_length=1)]
    signature: RelPath | None = None

    @model_validator(mode="after")
    def _one_runfile(self) -> Driver:
        if self.format == "runfile" and len(self.artifacts) != 1:
            raise ValueError(f"a runfile driver has exactly one artifact (the installer), not {len(self.artifacts)}")
        return self


RuntimeFamily = Literal["vllm", "vllm-rbln", "furiosa-llm", "sglang", "demo"]


class Runtime(Strict):
    name: Name
    family: RuntimeFamily = Field(description="The runtime profile it is launched with: which accelerators it "
                                  "supports, its flags, endpoints and KV connectors.")
    version: Version
    vendor: Name | None = None
    package: Package = Field(description="Package (pip or deb) whose installed version is verified: a bare name, "
                             "no version specifier or URL.")
    format: Literal["wheelhouse", "deb"] = Field(
        default="wheelhouse", description="wheelhouse: wheels, or tar/zip archives of wheels (unpacked on the host), "
        "installed offline with pip into a versioned prefix; deb: Debian packages installed with dpkg, `package` "
        "being the deb whose version is verified.")
    artifacts: Annotated[list[Artifact], Field(min_length=1)]
    signature: RelPath | None = None


class BaseModelRef(Strict):
    name: NonEmpty
    publisher: NonEmpty
    origin: Jurisdiction
    license: NonEmpty


class ModelCard(Strict):
    purpose: NonEmpty
    datasets: list[NonEmpty] = []
    metrics: dict[str, float | str] = {}
    limitations: str = ""


class ModelArchitecture(Strict):
    """What the KV-cache size depends on: KV bytes per token = 2 x layers x kv_heads x head_dim x bytes(KV dtype)."""

    layers: Annotated[int, Field(ge=1, le=4096)] = Field(description="Transformer layers (num_hidden_layers).")
    kv_heads: Annotated[int, Field(ge=1, le=4096)] = Field(description="Key/value heads (num_key_value_heads).")
    head_dim: Annotated[int, Field(ge=1, le=65536)] = Field(description="Dimension of one attention head.")


class Model(Strict):
    name: Name
    version: Version
    publisher: Name
    license: NonEmpty
    origin: Jurisdiction
    base_models: list[BaseModelRef] = []
    files: Annotated[list[Artifact], Field(min_length=1)]
    signature: RelPath | None = None
    signature_format: Literal["dsse", "model-signing"] = "dsse"
    dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] = "bf16"
    parameters_b: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    architecture: ModelArchitecture | None = Field(
        default=None, description="Needed to size the KV cache (policy SV-006 warns without it)."
    )
    card: ModelCard | None = None
    generative: bool = Field(
        default=True, description="Generates text, images, audio or video (false for embedding, reranking or "
        "classification models). On a Korean site a deployment of a generative model needs generated-output "
        "labelling (policy GEN-001).")
    config: RelPath | None = Field(
        default=None, description="The model's Hugging Face config.json, relative to the inventory: the serving "
        "planner reads layers, heads, FFN, vocabulary, MoE and MLA sizes from it (`sovkit serving plan`, policy "
        "SV latency/power checks).")


KvDtype = Literal["bf16", "fp16", "fp8", "int8"]


class Speculative(Strict):
    """Speculative decoding with a draft model that is itself a pinned, signed inventory model."""

    draft_model: Name = Field(description="A `models[]` name.")
    method: Literal["draft_model", "eagle", "eagle3", "ngram", "mtp"] = "draft_model"
    num_tokens: Annotated[int, Field(ge=1, le=64)] = Field(default=4, description="Tokens proposed per step.")


#: the largest `max_batch` a deployment may declare (the serving planner never plans beyond it)
MAX_BATCH = 65536


class ServingTargets(Strict):
    """Latency targets a deployment is planned for (the planner's prediction is checked against them)."""

    ttft_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Time to first token, milliseconds.")
    tpot_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Time per output token, milliseconds.")
    isl: Annotated[int, Field(ge=1, le=16_777_216)] | None = Field(
        default=None, description="Prompt tokens the targets hold for (`sovkit serving plan --isl`); policy "
        "predicts TTFT for one such prompt and TPOT midway to `max_model_len`. Default: half of `max_model_len`.")


class OutputLabelling(Strict):
    """How generated output is made known as AI-generated (Korea AI Basic Act, transparency of generative AI)."""

    methods: Annotated[list[Literal["user-notice", "visible-label", "machine-readable"]], Field(min_length=1)] = (
        Field(description="user-notice: users are told in advance that the service uses generative AI; "
              "visible-label: outputs carry a label people can see or hear; machine-readable: outputs carry "
              "metadata or a watermark (e.g. C2PA)."))
    reference: NonEmpty = Field(description="Where the labelling is specified or implemented (a document, "
                                "ticket or configuration reference) for an auditor to follow.")


class Deployment(Strict):
    name: Name
    model: Name
    runtime: Name
    hosts: Annotated[list[Name], Field(min_length=1)]
    role: Literal["prefill", "decode", "both"] = Field(
        default="both", description="Disaggregated serving role of these hosts (prefill is compute-bound, decode "
        "memory-bound)."
    )
    tensor_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    port: Port = 8000
    devices: list[Annotated[int, Field(ge=0, le=1023)]] | None = Field(
        default=None, description="Accelerator indexes it uses on each of its hosts (as many as tensor_parallel); "
        "default: allocated first-fit from the indexes no other deployment claims."
    )
    max_model_len: Annotated[int, Field(ge=1, le=16_777_216)] = Field(default=4096, description="Longest "
                                                                      "sequence (prompt + output) in tokens.")
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = Field(default=8, description="Sequences served at once.")
    kv_dtype: KvDtype | None = Field(default=None, description="KV-cache dtype; default: the model's dtype "
                                     "(int4 weights: int8).")
    speculative: Speculative | None = None
    targets: ServingTargets | None = Field(default=None, description="Latency targets; policy warns when "
                                           "the planner's prediction misses them.")
    readiness_timeout_s: Annotated[int, Field(ge=1, le=86_400)] = Field(
        default=600, description="How long apply waits for the server to become ready (loading weights takes "
        "minutes on real hardware) before the deployment is rolled back.")
    output_labelling: OutputLabelling | None = Field(
        default=None, description="Generated-output labelling of this deployment (policy GEN-001); default: its "
        "serving group's, else the site's `records.generated_output_labelling`.")

    @model_validator(mode="after")
    def _devices_match_tp(self) -> Deployment:
        if self.devices is not None:
            if len(set(self.devices)) != len(self.devices):
                raise ValueError(f"devices {self.devices} lists an index twice")
            if len(self.devices) != self.tensor_parallel:
                raise ValueError(f"devices lists {len(self.devices)} index(es) but tensor_parallel is "
                                 f"{self.tensor_parallel}: give one device per tensor-parallel rank")
        return self


class KvTransfer(Strict):
    """How the prefill side hands the KV cache to the decode side."""

    connector: Connector = Field(description="The runtime's KV connector (NixlConnector, P2pNcclConnector, "
                                 "RblnNixlConnector, SovkitDemoConnector, ...); must be one its family supports.")
    link: Literal["loopback", "ethernet", "rdma", "pcie", "nvlink"]
    port: Port = Field(default=14579, description="The decode side's KV listener port (vLLM's kv_port default).")


class Router(Strict):
    """The endpoint that sends each request to prefill, then to decode."""

    host: Name = Field(description="A `hosts[]` name the router runs on.")
    port: Port


class ServingGroup(Strict):
    """Disaggregated serving: a prefill deployment and a decode deployment of one model, with a router."""

    name: Name
    prefill: Name = Field(description="A `deployments[]` name with role prefill.")
    decode: Name = Field(description="A `deployments[]` name with role decode.")
    kv_transfer: KvTransfer
    router: Router
    output_labelling: OutputLabelling | None = Field(
        default=None, description="Generated-output labelling of what the group serves (policy GEN-001); "
        "default: the site's `records.generated_output_labelling`.")


class DataStore(Strict):
    name: Name
    kind: NonEmpty
    jurisdiction: Jurisdiction
    personal_data: bool = False
    location: str = ""


class Endpoint(Strict):
    """A network endpoint the site talks to; ``egress`` ones leave the site."""

    name: Name
    url: NonEmpty
    jurisdiction: Jurisdiction
    direction: Literal["ingress", "egress"] = "ingress"
    personal_data: bool = False


class TelemetrySink(Strict):
    name: Name
    url: NonEmpty
    jurisdiction: Jurisdiction


class LogSink(Strict):
    name: Name
    url: NonEmpty
    jurisdiction: Jurisdiction
    retention_days: Annotated[int, Field(ge=1)] = Field(description="Days records are kept before deletion "
                                                        "(policy LOG-002/004 judge it against the minimum).")
    decision_log: bool = Field(default=False, description="Holds the site's decision log: policy decisions and "
                               "compliance checks (`sovkit monitor` writes them). A site needs one (LOG-001).")
    inference_log: bool = Field(default=False, description="Holds the inference logs of the served models "
                                "(the serving system's automatically recorded events, AI Act Art. 12). A site "
                                "needs one (LOG-003).")


class Backup(Strict):
    name: Name
    source: Name
    target: NonEmpty
    jurisdiction: Jurisdiction


class ModelRegistry(Strict):
    name: Name
    url: NonEmpty
    jurisdiction: Jurisdiction


class TechnicalDocumentation(Strict):
    """Where the AI system's technical documentation (AI Act Annex IV) is kept, and for how long (Art. 18)."""

    location: NonEmpty = Field(description="The document system or archive holding it (a URL or reference).")
    jurisdiction: Jurisdiction
    retention_years: Annotated[int, Field(ge=1, le=1000)] = Field(description="Years it is kept after the system "
                                                                  "is placed on the market or put into service.")


class Representative(Strict):
    """A domestic representative (agent) of an operator without an address or place of business in the country."""

    name: NonEmpty
    contact: NonEmpty = Field(description="Address, e-mail or phone at which the representative is reached.")


class Records(Strict):
    """Records the law asks of the operator: retention minimums, technical documentation, and what Korea's AI Basic
    Act asks of operators of generative AI (policy LOG-002/004, DOC-001, GEN-001/002)."""

    min_log_retention_days: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Days decision and inference logs must be kept at least, for the operator's "
        "law. The pack's floor (183 days, about six months: AI Act Arts. 19(1), 26(6); "
        "`data.sovkit.config.min_log_retention_days`) applies when it is higher.")
    min_documentation_retention_years: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Years the technical documentation must be kept at least. The pack's floor (10 "
        "years: AI Act Art. 18; `data.sovkit.config.min_documentation_retention_years`) applies when it is higher.")
    technical_documentation: TechnicalDocumentation | None = Field(
        default=None, description="Required (policy DOC-001).")
    generated_output_labelling: OutputLabelling | None = Field(
        default=None, description="Site-wide generated-output labelling; a deployment or serving group may "
        "declare its own. On a Korean site every deployment of a generative model needs one (GEN-001).")
    operator_domestic_address: bool = Field(
        default=True, description="false: the operator has no address or place of business in the site's "
        "country. On a Korean site it then needs a `domestic_representative` (GEN-002).")
    domestic_representative: Representative | None = None


class Waiver(Strict):
    rule: NonEmpty
    resource: NonEmpty
    reason: NonEmpty
    expires: date


class Site(Strict):
    """A whole site: the root of the inventory."""

    api_version: Literal["sovkit.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Site"]
    metadata: Metadata
    jurisdiction: SiteJurisdiction
    residency: Residency
    trust_roots: TrustRoots = TrustRoots()
    artifact_store: ArtifactStore = ArtifactStore()
    state: StateBackend = StateBackend()
    racks: list[Rack] = []
    hosts: list[Host] = []
    firmware: list[Firmware] = []
    drivers: list[Driver] = []
    runtimes: list[Runtime] = []
    models: list[Model] = []
    deployments: list[Deployment] = []
    serving_groups: list[ServingGroup] = []
    data_stores: list[DataStore] = []
    endpoints: list[Endpoint] = []
    telemetry: list[TelemetrySink] = []
    log_sinks: list[LogSink] = []
    backups: list[Backup] = []
    model_registries: list[ModelRegistry] = []
    records: Records = Records()
    waivers: list[Waiver] = []

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), populate_by_name=False)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)
