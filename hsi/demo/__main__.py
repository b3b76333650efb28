"""`python -m hsi.demo`: the same command as `hsi demo`."""

from hsi.cli.processes import demo

if __name__ == "__main__":
    demo(prog_name="hsi demo")
