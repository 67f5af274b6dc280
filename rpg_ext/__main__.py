"""Command line of rpg_ext: ``python -m rpg_ext check``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpg_ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check_parser = sub.add_parser("check", help="verify that `import verl` registers the RPG losses (fresh process)")
    check_parser.add_argument(
        "--cpu", action="store_true", default=None,
        help="also check verl's CPU platform (rpg_ext.cpu); implied by VERL_PLATFORM=cpu",
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        from rpg_ext.check import check

        return check(cpu_platform=args.cpu)
    return 2


if __name__ == "__main__":
    sys.exit(main())
