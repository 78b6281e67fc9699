"""The Kubernetes example in deploy/kubernetes/, parsed and checked against heartbeat.

The manifests are parsed (no cluster runs here: the kubelet is what this cannot run);
what they mount is laid out in a temporary directory, path for path, and given to the
real ``heartbeat validate`` and ``heartbeat run``:

- heartbeat is a native sidecar (an init container with ``restartPolicy: Always``);
- the mounted config passes ``heartbeat validate`` with the pod's environment, takes
  the API key from the Secret's file, discovers by the pod name and probes the
  connector's pid file on a volume the connector writes, in a shared process namespace;
- the probe paths and ports match ``[metrics] listen``;
- the security settings are present;
- the memory request and limit cover the RSS that ``heartbeat run`` with this config
  measures here.

``make image-test`` runs the same config in the image, read-only, with a worker.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from tests.conftest import ES
from tests.helpers_daemon import run_daemon
from tests.support import write_config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: What metadata.name gives the sidecar through the downward API, in these tests.
POD_NAME = "connectors-7d9f8b6c5-x2x4q"
#: The image's own environment (Containerfile ENV).
IMAGE_ENV = {"STATE_DIRECTORY": "/var/lib/heartbeat"}
IMAGE_UID = 10001


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''} in deploy/kubernetes"
    return matches[0]


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = manifest("Deployment")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    spec = pod()
    for candidate in spec.get("initContainers", []) + spec["containers"]:
        if candidate["name"] == name:
            return dict(candidate)
    raise AssertionError(f"no container {name!r}")


def volume(name: str) -> dict[str, Any]:
    return next(v for v in pod()["volumes"] if v["name"] == name)


def mount_of(container_name: str, path: str) -> dict[str, Any]:
    """The volumeMount of that container under which ``path`` lies."""
    mounts = [
        m
        for m in container(container_name).get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on no volume of container {container_name}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def sidecar_environment(root: Path) -> dict[str, str]:
    env = {key: str(root) + value for key, value in IMAGE_ENV.items()}
    for item in container("heartbeat").get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = POD_NAME
        else:
            raise AssertionError(f"env {item['name']}: no value this test can give")
    return env


def lay_out_mounts(root: Path) -> str:
    """Writes every volume the sidecar mounts under ``root`` (ConfigMap and Secret
    keys as files, emptyDirs as directories) and returns the config file's text with
    each mount path moved under ``root``."""
    for mount in container("heartbeat")["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        source = volume(mount["name"])
        if "configMap" in source:
            data = manifest("ConfigMap", source["configMap"]["name"])["data"]
        elif "secret" in source:
            data = manifest("Secret", source["secret"]["secretName"])["stringData"]
        else:
            assert "emptyDir" in source, (
                f"volume {mount['name']}: not a ConfigMap, Secret, emptyDir"
            )
            data = {}
        for key, text in data.items():
            (target / key).write_text(text)
            (target / key).chmod(0o600)
    text = (root / config_path_in_pod().lstrip("/")).read_text()
    for mount in sorted(container("heartbeat")["volumeMounts"], key=lambda m: -len(m["mountPath"])):
        text = text.replace(f'"{mount["mountPath"]}', f'"{root}{mount["mountPath"]}')
    return text


def config_path_in_pod() -> str:
    args = container("heartbeat")["args"]
    assert args[0] == "run", args
    return str(args[args.index("--config") + 1])


async def validate(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "pod"
    config = tmp_path / "heartbeat.toml"
    write_config(config, lay_out_mounts(root))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    env.update(sidecar_environment(root))
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "heartbeat", "validate", "--config", str(config)],
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    # stdout is the configuration as JSON, secrets redacted ("valid" goes to stderr).
    return dict(json.loads(result.stdout))


def port_of(reference: int | str) -> int:
    if isinstance(reference, int):
        return reference
    ports = {p["name"]: p["containerPort"] for p in container("heartbeat")["ports"]}
    return int(ports[reference])


def bytes_of(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", quantity)
    assert match, f"memory quantity {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


# --- the shape ---------------------------------------------------------------------------


def test_heartbeat_is_a_native_sidecar_of_the_connector() -> None:
    spec = pod()
    sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "heartbeat"]
    assert len(sidecars) == 1
    assert sidecars[0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["connector"]
    assert manifest("Deployment")["spec"]["replicas"] == 1


def test_the_mounted_config_comes_from_the_configmap_and_the_key_from_a_secret_file() -> None:
    config_mount = mount_of("heartbeat", config_path_in_pod())
    assert config_mount.get("readOnly") is True
    assert "configMap" in volume(config_mount["name"])
    text = manifest("ConfigMap", volume(config_mount["name"])["configMap"]["name"])["data"][
        Path(config_path_in_pod()).name
    ]
    assert "api_key =" not in text, "the API key belongs in the Secret, not the ConfigMap"
    key_file = re.search(r'^api_key_file = "([^"]+)"', text, re.MULTILINE)
    assert key_file, "no api_key_file in the config"
    secret_mount = mount_of("heartbeat", key_file.group(1))
    secret = volume(secret_mount["name"])["secret"]
    assert secret_mount.get("readOnly") is True
    assert Path(key_file.group(1)).name in manifest("Secret", secret["secretName"])["stringData"]
    # Readable by heartbeat's group (fsGroup), by nobody else.
    assert secret["defaultMode"] & 0o007 == 0
    assert pod()["securityContext"]["fsGroup"] == IMAGE_UID


async def test_the_mounted_config_passes_heartbeat_validate(tmp_path: Path) -> None:
    shown = await validate(tmp_path)
    root = tmp_path / "pod"
    assert shown["elasticsearch"]["api_key"] == "***"
    assert shown["discovery"]["worker_hostname"] == POD_NAME
    assert shown["discovery"]["connector_ids"], "discovery is off"
    assert shown["state"]["dir"] == f"{root}/var/lib/heartbeat"
    # The pid file is on a volume the connector writes and heartbeat only reads, and
    # the connector's command writes exactly that file.
    pid_file = shown["worker"]["pid_file"].removeprefix(str(root))
    ours, theirs = mount_of("heartbeat", pid_file), mount_of("connector", pid_file)
    assert ours["name"] == theirs["name"]
    assert ours.get("readOnly") is True and not theirs.get("readOnly")
    command = " ".join(container("connector")["command"])
    assert f"echo $$ > {pid_file} && exec " in command
    assert pod()["shareProcessNamespace"] is True


async def test_the_probes_match_the_metrics_listener(tmp_path: Path) -> None:
    shown = await validate(tmp_path)
    host, _, port = shown["metrics"]["listen"].rpartition(":")
    # The kubelet probes the pod IP, so the listener must not be loopback only.
    assert host in {"0.0.0.0", "[::]"} and shown["metrics"]["allow_remote"] is True
    sidecar = container("heartbeat")
    probes = {
        kind: sidecar[kind]["httpGet"]
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        if kind in sidecar
    }
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for kind, probe in probes.items():
        assert port_of(probe["port"]) == int(port), f"{kind} probes port {probe['port']}"
    annotations = manifest("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == int(port)
    policy = manifest("NetworkPolicy")["spec"]["ingress"][0]["ports"][0]
    assert policy["port"] == int(port)


def test_the_security_settings_are_present() -> None:
    spec = pod()
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container("heartbeat")["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == IMAGE_UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # With a read-only root, the state directory must be a volume.
    state = mount_of("heartbeat", IMAGE_ENV["STATE_DIRECTORY"])
    assert state["mountPath"] == IMAGE_ENV["STATE_DIRECTORY"]
    assert "emptyDir" in volume(state["name"])
    connector = container("connector")["securityContext"]
    assert connector["allowPrivilegeEscalation"] is False
    assert connector["capabilities"]["drop"] == ["ALL"]


def prepare_sidecar(es: ES, root: Path, config: Path) -> tuple[str, dict[str, str]]:
    """The pod's config against the emulator, with this pod's job and the worker beside
    it (this test's process): the job id and the sidecar's environment."""
    text = lay_out_mounts(root)
    connector = re.search(r'^connector_ids = \["([^"]+)"\]', text, re.MULTILINE)
    pid_file = re.search(r'^pid_file = "([^"]+)"', text, re.MULTILINE)
    key_file = re.search(r'^api_key_file = "([^"]+)"', text, re.MULTILINE)
    assert connector and pid_file and key_file
    job = es.emu.create_job(connector_id=connector.group(1), worker_hostname=POD_NAME)
    Path(pid_file.group(1)).write_text(f"{os.getpid()}\n")
    es.emu.api_key = Path(key_file.group(1)).read_text()
    write_config(config, text)
    return job, sidecar_environment(root) | {
        "HEARTBEAT_ELASTICSEARCH__HOSTS": json.dumps([es.url]),
        "HEARTBEAT_METRICS__LISTEN": "127.0.0.1:0",
        "HEARTBEAT_SCHEDULE__INTERVAL": "1",
        "HEARTBEAT_DISCOVERY__INTERVAL": "1",
        "HEARTBEAT_WORKER__PROBE_INTERVAL": "0.5",
    }


def rss_of(pid: int) -> int:
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found
    return int(found.group(1)) * 1024


@pytest.mark.timeout(60)
async def test_the_memory_request_and_limit_cover_the_measured_rss(es: ES, tmp_path: Path) -> None:
    resources = container("heartbeat")["resources"]
    request = bytes_of(resources["requests"]["memory"])
    limit = bytes_of(resources["limits"]["memory"])
    assert "cpu" in resources["requests"]
    config = tmp_path / "heartbeat.toml"
    job, env = prepare_sidecar(es, tmp_path / "pod", config)
    async with run_daemon(config, env=env) as daemon:
        # Discovered by the pod name, vouched for while the worker lives, checked in.
        with anyio.fail_after(20):
            while len([c for c in es.emu.checkins() if c.job_id == job]) < 3:
                await anyio.sleep(0.1)
        rss = rss_of(daemon.process.pid)
    assert request >= rss, f"memory request {request} below the measured RSS {rss}"
    assert limit >= 2 * rss, f"memory limit {limit} leaves less than 2 x the RSS {rss}"
