"""The ``qgate`` command line.

The CLI is built by :func:`make_cli` from a :class:`~qgate.plugins.Registry`: every reporter
that writes a file adds a ``--NAME FILE`` option, and plugins can add subcommands.
"""

from __future__ import annotations

import functools
import json
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml

from qgate import __version__
from qgate.cache import ReferenceCache, default_cache_dir
from qgate.datasets import dataset_from_path
from qgate.errors import ExitCode, InternalError, QgateError, UsageError
from qgate.integrity import read_results
from qgate.options import describe_schema
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.loader import available_policies
from qgate.policy.resolved import resolved_policy_data
from qgate.progress import Progress
from qgate.results import RunReport
from qgate.runner import Interrupted, Runner, with_backend_overrides
from qgate.shard import parse_shard, select_shard


def exit_code_for(report: RunReport) -> ExitCode:
    """The exit code the results give: 0 only when :attr:`RunReport.passes`."""
    if report.incomplete:
        return ExitCode.INTERNAL_ERROR
    return ExitCode.OK if report.passes else ExitCode.GATE_FAILED


_Command = TypeVar("_Command", bound=Callable[..., Any])


def contained(command: _Command) -> _Command:
    """Run a built-in command so that nothing but its return value sets the exit code.

    A library or plugin that calls ``sys.exit()`` (argparse's ``--help``, click's standalone
    mode) while qgate measures or reports would otherwise end the process, possibly with 0 and
    without results. Built-in commands return their exit code instead of exiting.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SystemExit, GeneratorExit) as exc:
            code = f"({exc.code!r})" if isinstance(exc, SystemExit) else ""
            raise InternalError(
                f"something tried to end the process ({type(exc).__name__}{code}) before qgate "
                "had written its verdict; no verdict was reached"
            ) from exc

    return run  # type: ignore[return-value]


def _reporter_options(registry: Registry) -> list[click.Option]:
    return [
        click.Option(
            [f"--{name}", f"{name.replace('-', '_')}_out"],
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"write the {name} report here ({p.item.description or p.provider})".rstrip(),
        )
        for name, p in sorted(registry.reporters.items())
        if p.item.writes_file
    ]


def write_reports(
    registry: Registry, report: RunReport, outputs: dict[str, Path | None], *, console: bool = True
) -> None:
    """Write every requested report, then print the console one. One reporter failing does
    not stop the others: their files may be all that is left of a long run."""
    failures = []
    for name, p in sorted(registry.reporters.items()):
        path = outputs.get(f"{name.replace('-', '_')}_out")
        try:
            if p.item.writes_file and path is not None:
                p.item.write(report, path)
            elif not p.item.writes_file and console:
                click.echo(p.item.render(report))
        except (Exception, SystemExit) as exc:  # report every failure, after trying all
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        raise click.ClickException("could not write reports: " + "; ".join(failures))


def make_cli(registry: Registry) -> click.Group:
    """The ``qgate`` command group for the plugins in ``registry``."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="qgate")
    def cli() -> None:
        """qgate: a quality gate for quantized LLM releases.

        Measures quantized models against their full-precision reference under a YAML policy,
        writes JUnit, HTML, JSON and Markdown reports, and exits 1 when a gate fails.
        Exit codes: 0 pass, 1 gate failed, 2 usage or policy error, 3 internal error.
        """

    @click.command("check")
    @click.argument("models", nargs=-1, required=True)
    @click.option(
        "--policy",
        "-p",
        "policy_name",
        default="production",
        show_default=True,
        help="a shipped policy's name or a path to a policy YAML file",
    )
    @click.option("--reference", "-r", help="the full-precision reference model")
    @click.option(
        "--backend", "-b", help="backend for the subjects (default: detected from each file)"
    )
    @click.option(
        "--reference-backend", help="backend for the reference (default: --backend, or detected)"
    )
    @click.option(
        "--dataset",
        "datasets",
        multiple=True,
        metavar="[DOMAIN=]FILE",
        help="extra evaluation text (.txt or .jsonl with a 'text' field); repeatable",
    )
    @click.option("--n-ctx", type=click.IntRange(16), help="context size (overrides the policy)")
    @click.option("--threads", type=click.IntRange(1), help="CPU threads (overrides the policy)")
    @click.option("--gpu-layers", type=click.IntRange(-1), help="layers offloaded to the GPU")
    @click.option("--kv-cache", help="KV cache type for the subjects, e.g. f16, q8_0, q4_0")
    @click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="reference cache directory [default: $QGATE_CACHE_DIR or ~/.cache/qgate]",
    )
    @click.option("--no-cache", is_flag=True, help="neither read nor write the reference cache")
    @click.option("--quiet", "-q", is_flag=True, help="no progress output on stderr")
    @click.option("--profile", is_flag=True, help="print where the time went")
    @click.option(
        "--attestation",
        type=click.Path(dir_okay=False, path_type=Path),
        help="write an in-toto Statement (v1) of the verdict over the subjects' sha256 here",
    )
    @click.option(
        "--shard",
        metavar="K/N",
        callback=_validate_shard,
        help="run only shard K of N (1-based); join the shards' JSON with qgate merge",
    )
    @click.option(
        "--run-id",
        envvar="QGATE_RUN_ID",
        default="",
        help="names the run in the results; the shards of one CI run share it, and qgate merge "
        "refuses files of different runs [default: $QGATE_RUN_ID]",
    )
    @contained
    def check(
        models: tuple[str, ...],
        policy_name: str,
        reference: str | None,
        backend: str | None,
        reference_backend: str | None,
        datasets: tuple[str, ...],
        n_ctx: int | None,
        threads: int | None,
        gpu_layers: int | None,
        kv_cache: str | None,
        cache_dir: Path | None,
        no_cache: bool,
        quiet: bool,
        profile: bool,
        attestation: Path | None,
        shard: str | None,
        run_id: str,
        **outputs: Path | None,
    ) -> ExitCode:
        """Measure MODELS against the reference under a policy; exit 1 if a gate fails."""
        policy = load_policy(policy_name, registry.check_objects(), extra_dirs=registry.policy_dirs)
        options = with_backend_overrides(
            policy.backend, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, kv_cache=kv_cache
        )
        progress = Progress(enabled=not quiet)
        cache = ReferenceCache(None if no_cache else (cache_dir or default_cache_dir()))
        runner = Runner(
            registry,
            policy,
            reference=reference,
            backend=backend,
            reference_backend=reference_backend,
            extra_datasets=[dataset_from_path(d) for d in datasets],
            cache=cache,
            progress=progress,
            backend_options=options,
            run_id=run_id,
        )
        if shard is not None:
            runner.shard = select_shard(
                shard,
                list(models),
                policy,
                registry.check_objects(),
                options=options,
                datasets=runner.datasets,
            )
        with _sigterm_as_interrupt():
            report = runner.run(list(models))
        report.environment.update(
            {
                "command": shlex.join(["qgate", *sys.argv[1:]]),
                "policy_files": policy.files,
                "plugins": {name: p.provider for name, p in registry.checks.items()},
            }
        )
        started = time.perf_counter()
        write_reports(registry, report, outputs)
        if attestation is not None:
            from qgate.attestation import write_attestation

            if (why := write_attestation(report, attestation)) is not None:
                click.echo(f"qgate: no attestation written: {why}", err=True)
        report.timings["report"] = time.perf_counter() - started
        if profile:
            click.echo(_profile_text(report), err=True)
        return exit_code_for(report)

    check.params.extend(_reporter_options(registry))
    cli.add_command(check)

    @cli.command("report")
    @click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--quiet", "-q", is_flag=True, help="do not print the console summary")
    @contained
    def report_cmd(results: Path, quiet: bool, **outputs: Path | None) -> ExitCode:
        """Re-render reports from a RESULTS.json without measuring again.

        Every verdict is recomputed from the numbers beside it; a file whose verdicts disagree
        with them (edited, or damaged) is refused with exit 2.
        """
        report = read_results(results)
        write_reports(registry, report, outputs, console=not quiet)
        return exit_code_for(report)

    report_cmd.params.extend(_reporter_options(registry))

    @cli.command("verify")
    @click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--models",
        type=click.Path(file_okay=False, path_type=Path),
        help="look the models up by file name under this directory instead of their recorded paths",
    )
    @click.option("--quiet", "-q", is_flag=True, help="no progress output on stderr")
    @contained
    def verify_cmd(results: Path, models: Path | None, quiet: bool) -> ExitCode:
        """Re-hash the model files RESULTS.json names and compare them with its digests.

        Exit 0 when every file matches, 1 on any MISMATCH, missing or extra file, 2 when the
        results file cannot be read. The digest cache is never used: every byte is read again.
        """
        from qgate import verify

        checks = verify.verify(results, models_dir=models, progress=Progress(enabled=not quiet))
        for item in checks:
            click.echo(item.line())
        click.echo(verify.summary(checks))
        return verify.exit_code(checks)

    @cli.command("merge")
    @click.argument(
        "results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
    )
    @click.option("--quiet", "-q", is_flag=True, help="do not print the console summary")
    @contained
    def merge_cmd(results: tuple[Path, ...], quiet: bool, **outputs: Path | None) -> ExitCode:
        """Join the JSON results of shards (qgate check --shard K/N) into one report.

        Exit 1 when the merged gate fails, or when a shard is missing or incomplete (each unit
        it should have run becomes an error result); exit 2 when the files come from runs split
        a different number of ways or judged under different policies.
        """
        from qgate.merge import merge_results

        missing = [str(p) for p in results if not p.is_file()]
        if missing:
            raise UsageError(f"results file not found: {', '.join(missing)}")
        outcome = merge_results([(str(p), read_results(p)) for p in results])
        for problem in outcome.problems:
            click.echo(f"qgate: {problem}", err=True)
        write_reports(registry, outcome.report, outputs, console=not quiet)
        return exit_code_for(outcome.report)

    merge_cmd.params.extend(_reporter_options(registry))

    @cli.command("baseline")
    @click.argument("reference")
    @click.option(
        "--policy",
        "-p",
        "policy_name",
        default="production",
        show_default=True,
        help="the policy whose datasets and scoring settings the checks will use",
    )
    @click.option("--backend", "-b", help="backend for the reference (default: detected)")
    @click.option(
        "--dataset",
        "datasets",
        multiple=True,
        metavar="[DOMAIN=]FILE",
        help="extra evaluation text, as given to qgate check; repeatable",
    )
    @click.option("--n-ctx", type=click.IntRange(16), help="context size (overrides the policy)")
    @click.option("--threads", type=click.IntRange(1), help="CPU threads (overrides the policy)")
    @click.option("--gpu-layers", type=click.IntRange(-1), help="layers offloaded to the GPU")
    @click.option("--kv-cache", help="KV cache type, as given to qgate check")
    @click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="reference cache directory [default: $QGATE_CACHE_DIR or ~/.cache/qgate]",
    )
    @click.option("--quiet", "-q", is_flag=True, help="no progress output on stderr")
    @contained
    def baseline_cmd(
        reference: str,
        policy_name: str,
        backend: str | None,
        datasets: tuple[str, ...],
        n_ctx: int | None,
        threads: int | None,
        gpu_layers: int | None,
        kv_cache: str | None,
        cache_dir: Path | None,
        quiet: bool,
    ) -> None:
        """Score REFERENCE once and store its outputs in the reference cache.

        Later qgate check runs with the same policy and options (on other CI runners too, once
        the cache directory is restored there) read the reference from the cache and never load
        it. Use the same --n-ctx, --kv-cache and --dataset as the checks.
        """
        from qgate.baseline import compute_baseline

        policy = load_policy(policy_name, registry.check_objects(), extra_dirs=registry.policy_dirs)
        options = with_backend_overrides(
            policy.backend, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, kv_cache=kv_cache
        )
        with _sigterm_as_interrupt():
            outcome = compute_baseline(
                registry,
                policy,
                reference,
                backend=backend,
                options=options,
                extra_datasets=[dataset_from_path(d) for d in datasets],
                cache=ReferenceCache(cache_dir or default_cache_dir()),
                progress=Progress(enabled=not quiet),
            )
        for line in outcome.lines():
            click.echo(line)

    @cli.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def plugins_cmd(as_json: bool) -> None:
        """List installed backends, checks and reporters, with who provides each."""
        data = plugin_listing(registry)
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for kind, items in data.items():
            click.echo(f"{kind}:")
            for item in items:
                click.echo(f"  {item['name']:<16} {item['provider']:<24} {item['description']}")

    @cli.group("policy")
    def policy_group() -> None:
        """Validate and show policies."""

    @policy_group.command("validate")
    @click.argument("files", nargs=-1, required=True)
    def policy_validate(files: tuple[str, ...]) -> None:
        """Validate policy files (names of shipped policies work too); exit 2 on the first error."""
        for file in files:
            policy = load_policy(file, registry.check_objects(), extra_dirs=registry.policy_dirs)
            click.echo(f"{file}: ok ({len(policy.checks)} checks, policy {policy.name!r})")

    @policy_group.command("show")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of YAML")
    def policy_show(name: str, as_json: bool) -> None:
        """Print the resolved policy (extends applied, defaults filled in)."""
        policy = load_policy(name, registry.check_objects(), extra_dirs=registry.policy_dirs)
        data = resolved_policy_data(policy)
        click.echo(
            json.dumps(data, indent=2)
            if as_json
            else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        )

    @policy_group.command("list")
    def policy_list() -> None:
        """List the policies that can be named without a path."""
        for name, path in available_policies(registry.policy_dirs).items():
            click.echo(f"{name:<16} {path}")

    @cli.command("inspect")
    @click.argument("model")
    @click.option("--backend", "-b", help="backend (default: detected)")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.option(
        "--identity",
        "other",
        metavar="OTHER",
        help="compare MODEL with OTHER: metadata side by side and, for two GGUF files, "
        "dequantized tensors (the identity check's evidence, without loading either model)",
    )
    def inspect_cmd(model: str, backend: str | None, as_json: bool, other: str | None) -> None:
        """Print a model's metadata, read without loading its weights."""

        def inspect_one(path: Path) -> Any:
            if not path.exists():
                raise UsageError(f"model not found: {path}")
            if backend is not None:
                chosen = registry.backend(backend)
            else:
                matches = [p.item for p in registry.backends.values() if p.item.detect(path)]
                if not matches:
                    raise UsageError(f"{path}: no installed backend recognises this file")
                chosen = matches[0]
            return chosen.inspect(path)

        if other is not None:
            from qgate_checks.identity import format_pairwise, pairwise_evidence

            evidence = pairwise_evidence(inspect_one(Path(model)), inspect_one(Path(other)))
            click.echo(
                json.dumps(evidence, indent=2, default=str)
                if as_json
                else format_pairwise(evidence)
            )
            return
        info = inspect_one(Path(model)).to_dict()
        if as_json:
            click.echo(json.dumps(info, indent=2, default=str))
            return
        for key, value in info.items():
            if isinstance(value, dict):
                click.echo(f"{key}:")
                for k, v in value.items():
                    click.echo(f"  {k}: {v}")
            else:
                click.echo(f"{key}: {value}")

    for name, provided in registry.commands.items():
        if name in cli.commands:
            raise UsageError(
                f"plugin {provided.plugin!r} adds a command {name!r} that already exists"
            )
        cli.add_command(provided.item, name)
    return cli


def plugin_listing(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    def rows(items: dict[str, Any], with_options: bool = False) -> list[dict[str, Any]]:
        out = []
        for name, p in sorted(items.items()):
            row = {
                "name": name,
                "provider": p.provider,
                "plugin": p.plugin,
                "description": getattr(p.item, "description", "") or "",
            }
            if with_options:
                row["options"] = describe_schema(p.item.Options)
            out.append(row)
        return out

    return {
        "backends": rows(registry.backends),
        "checks": rows(registry.checks, with_options=True),
        "reporters": rows(registry.reporters),
        "commands": rows(registry.commands),
    }


def _profile_text(report: RunReport) -> str:
    lines = ["qgate profile (seconds):"]
    for phase, seconds in sorted(report.timings.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {phase:<28} {seconds:9.2f}")
    lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(report.counters.items())))
    return "\n".join(lines)


def _validate_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_shard(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


class _sigterm_as_interrupt:
    """Turn SIGTERM (a cancelled CI job) into an interrupt, so partial results get written."""

    def __enter__(self) -> None:
        def handler(signum: int, frame: object) -> NoReturn:
            raise Interrupted(f"signal {signum}")

        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self.previous = None

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: errors for people get a message and exit 2; bugs a traceback and exit 3."""
    try:
        registry = Registry.from_environment()
        cli = make_cli(registry)
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="qgate", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("qgate: aborted", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(
            ExitCode.USAGE_ERROR if isinstance(exc, click.UsageError) else ExitCode.INTERNAL_ERROR
        )
    except QgateError as exc:
        click.echo(f"qgate: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Interrupted):
        click.echo("qgate: interrupted", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)
    except Exception:
        click.echo("qgate: internal error (please report this with the traceback):", err=True)
        traceback.print_exc()
        sys.exit(ExitCode.INTERNAL_ERROR)
    # built-in commands return their exit code; a plugin's command may return None (success)
    sys.exit(int(code) if isinstance(code, int) else ExitCode.OK)
