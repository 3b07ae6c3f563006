#!/usr/bin/env python3
"""qkdsim command line: load, build, run, report. The logic lives in simulator/ and nodes/.

  run_scenario.py SCENARIO.yaml [--out DIR] [--seed N] [--until DURATION]   run a scenario
  run_scenario.py SCENARIO.yaml --partitions N [--engine local|ray] [--address ADDR]
                                             ...split into N regions (the same files)
  run_scenario.py SCENARIO.yaml --serve [--record trace.jsonl]   serve it in wall time
  run_scenario.py SCENARIO.yaml --serve --dashboard [HOST:]PORT   ...with a live dashboard
  run_scenario.py --serve                    serve one LKM configured by the seed's env variables
  run_scenario.py validate SCENARIO.yaml     check a scenario, print its errors
  run_scenario.py schema                     print the scenario JSON Schema
  run_scenario.py report DIR                 rebuild a run's summary and plots from its files
  run_scenario.py sweep SWEEP.yaml [--engine local|ray] [--address ADDR] [--jobs N] [--out DIR]
                                             many runs across seeds and parameters
  run_scenario.py pki --out DIR --sae ID...  write a CA, node and SAE certificates
  run_scenario.py linkrate [--preset NAME] [--param NAME=VALUE] [--compare]   key rate vs distance
  run_scenario.py linkrate --calibration     print docs/link-models.md's calibration table

Exit codes: 0 ok (every expectation held), 1 an expectation failed, 2 invalid input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_EXPECTATION, EXIT_USAGE = 0, 1, 2


def pki_main(argv: list[str]) -> int:
    from nodes.server import pki_command

    return pki_command(argv, str(Path(__file__).resolve()))


def configure_logging() -> bool:
    """Log served nodes at ``LOG_LEVEL`` (default INFO: refused requests are logged, answered
    ones at DEBUG); False after printing why the level is not valid."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        print(f"error: LOG_LEVEL: {level!r} is not DEBUG, INFO, WARNING or ERROR",
              file=sys.stderr)
        return False
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return True


def serve_node_main() -> int:
    from nodes.keynode import ConfigError, NodeConfig
    from nodes.server import serve_forever

    try:
        config = NodeConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not configure_logging():
        return EXIT_USAGE
    try:
        asyncio.run(serve_forever(config, announce=lambda line: print(line, flush=True)))
    except OSError as error:
        print(f"error: cannot serve on {config.host}:{config.port}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:  # e.g. the database was sealed under another at-rest key
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def load(path: Path, seed: int | None = None, until: str | None = None):
    """The validated scenario, or None after printing every error (path: message); a note for
    each outage that ``until`` leaves out."""
    from nodes.run import ScenarioError, load_scenario

    try:
        scenario = load_scenario(path)
        shortened = scenario.with_overrides(seed=seed, duration_s=until)
        for line in scenario.cut_outages(until) if until is not None else ():
            print(f"note: --until {until}: {line}", file=sys.stderr)
        return shortened
    except ScenarioError as error:
        if all(line.startswith("--") for line in error.errors):  # a flag's value, not the file
            for line in error.errors:
                print(f"error: {line}", file=sys.stderr)
            return None
        print(f"invalid scenario {path}:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def validate_main(argv: list[str]) -> int:
    from nodes.run import capacity_warnings, unsupported

    parser = argparse.ArgumentParser(
        prog="run_scenario.py validate",
        description="Check scenario files without running them: every error is printed as "
                    "'field: message' and the exit code is 2; warnings (a slice that can never "
                    "fill in one top-up, say) are printed and the exit code stays 0.")
    parser.add_argument("scenario", nargs="+", type=Path, help="scenario YAML files")
    status = EXIT_OK
    for path in parser.parse_args(argv).scenario:
        scenario = load(path)
        problems = [] if scenario is None else unsupported(scenario)
        for line in problems:
            print(f"{path}: {line}", file=sys.stderr)
        if scenario is None or problems:
            status = EXIT_USAGE
        else:
            for line in capacity_warnings(scenario):  # runs, but not as the author meant
                print(f"{path}: warning: {line}", file=sys.stderr)
            print(f"{path}: ok ({scenario.name})")
    return status


def schema_main(argv: list[str]) -> int:
    import json

    from nodes.run import scenario_json_schema

    argparse.ArgumentParser(
        prog="run_scenario.py schema",
        description="Print the JSON Schema of a scenario file (for editors and CI): every "
                    "field, its type, default and description.").parse_args(argv)
    print(json.dumps(scenario_json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def linkrate_main(argv: list[str]) -> int:
    from nodes.run import LinkRateError, calibration_markdown, link_rate_report

    parser = argparse.ArgumentParser(
        prog="run_scenario.py linkrate",
        description="Secret key rate, loss and QBER against distance for a decoy_bb84 link "
                    "(docs/link-models.md): a table, and DIR/rate_vs_distance.png.")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--preset", help="start from a published system's parameters")
    model.add_argument("--model", choices=["decoy_bb84"],
                       help="the model with its defaults (what runs without --preset)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a model parameter (repeatable)")
    parser.add_argument("--max-km", type=float,
                        help="table up to here (default: 10%% past the cutoff, or 200 km)")
    parser.add_argument("--step-km", type=float, help="table step (default 10 km)")
    parser.add_argument("--out", type=Path, default=Path("results") / "linkrate",
                        help="folder for rate_vs_distance.png (default results/linkrate)")
    parser.add_argument("--compare", action="store_true", help="draw every preset as well")
    parser.add_argument("--calibration", action="store_true",
                        help="print the calibration table (markdown) and nothing else")
    args = parser.parse_args(argv)
    if args.calibration:
        print(calibration_markdown(), end="")
        return EXIT_OK
    try:
        table, figure = link_rate_report(args.preset, args.param, args.max_km, args.step_km,
                                         args.out, args.compare)
    except LinkRateError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(table)
    print(f"figure: {figure}")
    return EXIT_OK


class Progress:
    """A one-line progress bar on stderr, shown once a run has taken a few seconds."""

    def __init__(self, show_after_s: float = 2.0) -> None:
        import time

        self._clock = time.monotonic
        self._start = self._clock()
        self._shown_at = -1.0
        self.show_after_s = show_after_s

    def __call__(self, now_s: float, until_s: float) -> None:
        elapsed = self._clock() - self._start
        if not sys.stderr.isatty() or elapsed < self.show_after_s or elapsed - self._shown_at < 0.25:
            return
        self._shown_at = elapsed
        done = min(now_s / until_s, 1.0) if until_s else 1.0
        bar = "#" * int(done * 30)
        print(f"\r[{bar:<30}] {done:6.1%}  t={now_s / 3600:8.1f} h  {elapsed:5.1f} s wall",
              end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._shown_at >= 0:
            print(file=sys.stderr)


def unwritable(out_dir: Path) -> str | None:
    """Why results cannot be written to ``out_dir`` (made if missing), or None."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        return f"cannot write results there ({error.strerror or error})"
    return None


def run_main(args: argparse.Namespace) -> int:
    from nodes.parallel import PartitionError, run_partitioned  # Ray only with --engine ray
    from nodes.run import ScenarioError, capacity_warnings, format_outcome, run, serve

    scenario = load(args.scenario, args.seed, args.until)
    if scenario is None:
        return EXIT_USAGE
    for line in capacity_warnings(scenario, serving=args.serve):
        print(f"warning: {line}", file=sys.stderr)
    if args.serve and not configure_logging():
        return EXIT_USAGE
    # a served run keeps its own folder: it never overwrites the last virtual run's results
    out_dir = args.out or Path("results") / (scenario.name + ("-served" if args.serve else ""))
    problem = unwritable(out_dir)
    if problem is not None:
        print(f"error: --out {out_dir}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress()
    announce = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if args.serve and args.dashboard is not None:
            from nodes.dashboard import serve_with_dashboard
            outcome = asyncio.run(serve_with_dashboard(scenario, out_dir, args.record, announce,
                                                       args.dashboard))
        elif args.serve:
            outcome = asyncio.run(serve(scenario, out_dir, args.record, announce))
        elif args.partitions is not None:
            outcome = asyncio.run(run_partitioned(scenario, out_dir, args.partitions, args.engine,
                                                  args.address, progress=progress))
        else:
            outcome = asyncio.run(run(scenario, out_dir, progress))
    except PartitionError as error:  # a region failed, or Ray did not start
        progress.close()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_EXPECTATION
    except ScenarioError as error:
        progress.close()
        print(f"cannot run {args.scenario}:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    progress.close()
    print(format_outcome(outcome))
    return outcome.exit_code


def report_main(argv: list[str]) -> int:
    from nodes.run import RebuildError, format_outcome, rebuild

    parser = argparse.ArgumentParser(
        prog="run_scenario.py report",
        description="Rebuild a run's summary, plots and verdicts from the files in its results "
                    "folder (scenario.yaml, metrics.csv, events.jsonl), finished or killed.")
    parser.add_argument("dir", type=Path, help="a run's results folder")
    out_dir = parser.parse_args(argv).dir
    try:
        outcome, notes = rebuild(out_dir)
    except RebuildError as error:
        print(f"cannot rebuild {out_dir}: {error}", file=sys.stderr)
        return EXIT_USAGE
    for note in notes:
        print(f"repaired: {note}", file=sys.stderr)
    print(format_outcome(outcome))
    return outcome.exit_code


def sweep_main(argv: list[str]) -> int:
    from nodes.sweep import (
        ENGINES,
        EngineError,
        SweepError,
        format_sweep,
        load_sweep,
        print_progress,
        run_sweep,
    )

    parser = argparse.ArgumentParser(
        prog="run_scenario.py sweep",
        description="Run a scenario across seeds and parameters (a sweep file: scenario, vary, "
                    "zip, seeds, collect); writes sweep.csv, plots/, report.html and runs/<id>/. "
                    "A rerun into the same --out skips the runs already done.")
    parser.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: a process pool here (default); ray: a Ray task per run")
    parser.add_argument("--address", help="with --engine ray: a running cluster (ray start "
                        "--head prints it); default: a local Ray instance for this sweep")
    parser.add_argument("--jobs", type=positive_int, help="runs at once (default: CPUs)")
    parser.add_argument("--out", type=Path, help="results folder (default results/sweep-<name>)")
    args = parser.parse_args(argv)
    if args.address and args.engine != "ray":
        print("error: --address goes with --engine ray", file=sys.stderr)
        return EXIT_USAGE
    try:
        sweep = load_sweep(args.sweep)
    except SweepError as error:
        print(f"invalid sweep {args.sweep}:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    out_dir = args.out or Path("results") / f"sweep-{sweep.name}"
    problem = unwritable(out_dir)
    if problem is not None:
        print(f"error: --out {out_dir}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = run_sweep(sweep, out_dir, args.engine, args.jobs, args.address, print_progress)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(format_sweep(sweep, outcome))
    return outcome.exit_code


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


COMMANDS = {"pki": pki_main, "validate": validate_main, "schema": schema_main,
            "linkrate": linkrate_main, "report": report_main, "sweep": sweep_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv[:1] and not argv[0].startswith("-") and not Path(argv[0]).exists() \
            and Path(argv[0]).suffix.lower() not in (".yaml", ".yml"):
        print(f"error: unknown command {argv[0]!r}: the commands are {', '.join(COMMANDS)}, "
              "or give a scenario file (run_scenario.py --help)", file=sys.stderr)
        return EXIT_USAGE
    parser = argparse.ArgumentParser(prog="run_scenario.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", type=Path)
    parser.add_argument("--serve", action="store_true", help="serve in wall-clock time")
    parser.add_argument("--out", type=Path, help="results folder (default results/<name>)")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--until", help="override the scenario's duration, e.g. 2d")
    parser.add_argument("--record", type=Path,
                        help="with --serve: write every external request to this trace (JSONL)")
    parser.add_argument("--dashboard", metavar="[HOST:]PORT",
                        help="with --serve: a live dashboard with fault injection on this port "
                             "(loopback unless a host is given; then it needs the printed token)")
    parser.add_argument("--partitions", type=positive_int, metavar="N",
                        help="split the network into N regions run side by side (the same "
                             "files as one process)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="with --partitions: regions in this process, or in Ray actors")
    parser.add_argument("--address", help="with --engine ray: a running cluster (default: a "
                                           "local Ray instance for the run)")
    args = parser.parse_args(argv)
    for wrong, message in ((args.partitions is not None and args.serve,
                            "--partitions goes with a virtual run, not --serve"),
                           ((args.engine != "local" or args.address) and not args.partitions,
                            "--engine and --address go with --partitions"),
                           (args.address and args.engine != "ray",
                            "--address goes with --engine ray")):
        if wrong:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USAGE
    if args.dashboard is not None and args.scenario is None:
        print("error: --dashboard serves a scenario: give a scenario file", file=sys.stderr)
        return EXIT_USAGE
    if args.serve and args.scenario is None:
        return serve_node_main()
    if args.scenario is None:
        parser.print_usage(sys.stderr)
        print("error: a scenario file or --serve is required", file=sys.stderr)
        return EXIT_USAGE
    if args.record is not None and not args.serve:
        print("error: --record goes with --serve", file=sys.stderr)
        return EXIT_USAGE
    if args.dashboard is not None:
        from nodes.dashboard import AddressError, parse_address
        try:
            parse_address(args.dashboard)
        except AddressError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        if not args.serve:
            print("error: --dashboard goes with --serve", file=sys.stderr)
            return EXIT_USAGE
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
