"""`curator demo`: the demo manifest against a local scripted teacher started here (no API key)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_demo(out: Path | None = None, progress: bool = True):
    from curator.config import load_manifest
    from curator.run import RunError, run_manifest
    from curator.server.config import ServerConfig
    from curator.server.runner import ServerProcess

    manifest_path = REPO / "manifests" / "demo.yaml"
    server_path = REPO / "manifests" / "demo-server.yaml"
    if not manifest_path.exists():
        raise RunError(f"{manifest_path}: the demo needs a checkout of the curator repository")
    cfg = yaml.safe_load(server_path.read_text())
    cfg["problems"] = str((server_path.parent / cfg["problems"]).resolve())
    manifest = load_manifest(manifest_path)
    if out is not None:
        manifest.output = str(Path(out).resolve())
    port = int(manifest.teacher.base_url.split(":")[-1].split("/")[0])
    server = ServerProcess(ServerConfig.model_validate(cfg), port=port)
    try:
        result = run_manifest(manifest, progress=progress)
    finally:
        server.stop()
    return result
