"""The ``cache-key`` step: where the reference cache lives and the key it is saved under."""

from __future__ import annotations

import platform
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from qgate import __version__
from qgate_github.workflow import workflow_command


def cache_directory(env: Mapping[str, str]) -> str:
    """The reference cache directory: the ``cache-dir`` input, else ``qgate-cache`` under
    ``$RUNNER_TEMP``, outside the workspace, which a pull request can write."""
    given = env.get("QGATE_CACHE_DIR", "").strip()
    if given:
        workspace = env.get("GITHUB_WORKSPACE", "").strip()
        if workspace and _inside(Path(given), Path(workspace)):
            print(
                workflow_command(
                    "warning",
                    f"the reference cache directory {given} is inside the workspace, which the "
                    "pull request under test can write: leave cache-dir empty to keep it outside",
                    title="qgate",
                )
            )
        return given
    return str(Path(env.get("RUNNER_TEMP", "").strip() or tempfile.gettempdir()) / "qgate-cache")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def cache_key(env: Mapping[str, str]) -> str:
    """``qgate-ref-<os>-<policy>-<policy digest>-<reference sha256>-qgate<version>``, or ""
    without a reference. The cached entries are content-addressed anyway: the key decides only
    what is restored, never what is trusted."""
    from qgate.datasets import load_dataset
    from qgate.hashing import DigestIndex
    from qgate.plugins import Registry
    from qgate.policy import load_policy
    from qgate.shard import policy_digest

    reference = env.get("QGATE_REFERENCE", "").strip()
    if not reference:
        return ""
    registry = Registry.from_environment()
    policy = load_policy(
        env.get("QGATE_POLICY", "").strip() or "production",
        registry.check_objects(),
        extra_dirs=registry.policy_dirs,
    )
    digest = policy_digest(policy, policy.backend, [load_dataset(d) for d in policy.datasets])
    ref = DigestIndex(None).digest(Path(reference))
    system = env.get("RUNNER_OS") or platform.system()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", policy.name)
    return f"qgate-ref-{system}-{name}-{digest[:12]}-{ref[:16]}-qgate{__version__}"
