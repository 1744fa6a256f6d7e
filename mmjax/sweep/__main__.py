"""`python -m mmjax.sweep`: see mmjax.sweep.cli."""

from mmjax.sweep import cli

if __name__ == "__main__":
    cli.run()
