from curator.cli import app

app(prog_name="curator")
