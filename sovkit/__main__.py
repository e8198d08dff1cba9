from sovkit.cli.main import run

run()
