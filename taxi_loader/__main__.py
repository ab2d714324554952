from taxi_loader.cli import run

run()
