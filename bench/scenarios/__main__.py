"""``python -m bench.scenarios``: list and run the "what happens if" scenarios.

    python -m bench.scenarios list
    python -m bench.scenarios run X7 X9        # by id or by name
    python -m bench.scenarios run --all

Each scenario prints the text's prediction (quoted, with its source), the
transcript of what it did and what the programs printed, ``netstat``- and
``ps``-style snapshots read from /proc, its checks, and a verdict.  The exit
status is 0 when every scenario ran as its text predicts, 1 when an
observation contradicted a prediction (or a scenario could not finish), 2 for
a usage error.
"""

import signal
import sys
import time
import traceback

from bench.scenarios import REGISTRY, find
from bench.scenarios.harness import OverTime, Run, ScenarioError
import cli


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def build_parser():
    parser = cli.Parser(
        prog="python -m bench.scenarios",
        description="The texts' boundary conditions as runnable experiments, on loopback: "
                    "each prints the text's prediction, a transcript, the TCP states and the "
                    "process table, and a verdict. Exit status 1 if an observation contradicts "
                    "the text.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run}")
    sub.add_parser("list", help="list the scenarios, by id")
    run = sub.add_parser("run", help="run scenarios by id or name, or --all")
    run.add_argument("ids", nargs="*", metavar="ID", help="scenario ids or names (see list)")
    run.add_argument("--all", action="store_true", help="run every scenario, in order")
    return parser


def list_scenarios(out):
    """One line per scenario, in the texts' order: its ids, its name, its title and source."""
    ids = max(len(sc.ident) for sc in REGISTRY.values())
    names = max(len(sc.name) for sc in REGISTRY.values())
    for sc in REGISTRY.values():
        print(f"{sc.ident:<{ids}}  {sc.name:<{names}}  {sc.title}  [{sc.source}]", file=out)


def run_one(sc, out=sys.stdout):
    """Run one scenario with its time limit; True if it went as the text predicts.

    The limit is the harness's: each of its waits ends at the limit with
    OverTime, and a scenario that returns past it is failed too.
    """
    print(f"\n{'=' * 78}\n{sc.ident} {sc.name}: {sc.title}\n{'=' * 78}", file=out)
    print(f"Prediction ({sc.source}):", file=out)
    for line in sc.prediction.strip().splitlines():
        print(f"  > {line}", file=out)
    print("\nTranscript:", file=out)
    r = Run(sc, out)
    problem = None
    try:
        try:
            sc.func(r)
            r.check_time(f"it ran {time.monotonic() - r.start:.1f} s")
        except (OverTime, ScenarioError) as exc:
            problem = str(exc)
        except Exception:       # a bug in the scenario: show it, count it as a failure
            problem = "the scenario itself failed:\n" + traceback.format_exc()
    finally:
        r.flush_all()
        r.cleanup()
    print("\nChecks:", file=out)
    for ok, what in r.checks:
        print(f"  [{'ok' if ok else 'CONTRADICTED'}] {what}", file=out)
    if problem:
        print(f"  [FAILED] {problem}", file=out)
    passed = problem is None and all(ok for ok, _ in r.checks) and bool(r.checks)
    seconds = time.monotonic() - r.start
    verdict = ("as the text predicts" if passed
               else "CONTRADICTS the prediction" if problem is None
               else "could not be completed")
    print(f"\nVerdict: {verdict} ({seconds:.1f} s)", file=out)
    out.flush()
    return passed


def main(argv=None):
    args = build_parser().parse_args(argv)
    # SIGTERM ends the run as Ctrl-C does: each scenario's cleanup still runs.
    signal.signal(signal.SIGTERM, _terminated)
    out = sys.stdout
    if args.command == "list":
        list_scenarios(out)
        return 0
    if args.all == bool(args.ids):
        raise cli.Fatal(f"give scenario ids or names, or --all (not both); "
                        f"`{cli.prog_name()} list` shows them", status=cli.EXIT_USAGE)
    chosen = list(REGISTRY.values())
    if args.ids:
        chosen = []
        for key in args.ids:
            sc = find(key)
            if sc is None:
                raise cli.Fatal(f"no scenario {key!r}; `{cli.prog_name()} list` shows them",
                                status=cli.EXIT_USAGE)
            chosen.append(sc)
    start = time.monotonic()
    failed = [sc.ident for sc in chosen if not run_one(sc, out)]
    print(f"\n{len(chosen) - len(failed)} of {len(chosen)} scenario(s) as the texts predict"
          f"{': contradicted or unfinished: ' + ', '.join(failed) if failed else ''} "
          f"({time.monotonic() - start:.1f} s)", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
