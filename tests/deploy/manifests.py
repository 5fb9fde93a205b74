"""The Kubernetes manifests (deploy/kubernetes/), read as `kubectl apply -f` sends them:
plain YAML, one object per document, nothing rendered. Shared by the tests in this folder:
what the objects are, what environment a container gets (ConfigMaps, Secrets, `$(VAR)`
expansion) and what src/config.py makes of it, the Secrets docs/kubernetes.md creates, and
the connection arithmetic against the database server's max_connections.
"""

import base64
import hashlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from alembic_pg_guard.rehearse import RollingTimings

from src.config import PROJECT_ROOT, Settings

DEPLOY = PROJECT_ROOT / "deploy" / "kubernetes"
KUBERNETES_DOCS = PROJECT_ROOT / "docs" / "kubernetes.md"
# One folder per step of a release, in its order (docs/kubernetes.md); pgbouncer/ is the
# optional part. One object per file (pre-commit's check-yaml takes one YAML document).
BASE_FOLDERS = ("base", "migrate", "api")
PGBOUNCER_FOLDERS = ("pgbouncer",)
# The one Kubernetes version every object is validated against, strictly (no unknown
# field): the newest stable one whose schemas the installed kubernetes-validate ships.
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "alembic-stuff"
ANNOTATION = "alembic-stuff.example/"
CONFIG = "alembic-stuff-config"
POOLER_CONFIG = "alembic-stuff-api-pooler"
API = "alembic-stuff-api"
PGBOUNCER = "alembic-stuff-pgbouncer"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY")


@dataclass(frozen=True)
class Rollout:
    """The timings of a rolling update: what `rehearse --rolling` rehearses."""

    replicas: int | None
    max_surge: int | None
    max_unavailable: int | None
    readiness_period_seconds: int | None
    readiness_timeout_seconds: int | None
    readiness_failure_threshold: int | None
    readiness_success_threshold: int | None
    pre_stop_seconds: int | None
    drain_timeout_seconds: float
    termination_grace_period_seconds: int | None


# `rehearse --rolling`'s defaults (alembic_pg_guard.rehearse.RollingTimings): the manifests
# roll out exactly what it rehearses.
_TIMINGS = RollingTimings().as_dict()
REHEARSED = Rollout(
    replicas=3,
    max_surge=_TIMINGS["max_surge"],
    max_unavailable=_TIMINGS["max_unavailable"],
    readiness_period_seconds=_TIMINGS["probe_period"],
    readiness_timeout_seconds=_TIMINGS["probe_timeout"],
    readiness_failure_threshold=_TIMINGS["failure_threshold"],
    readiness_success_threshold=_TIMINGS["success_threshold"],
    pre_stop_seconds=_TIMINGS["prestop_sleep"],
    drain_timeout_seconds=_TIMINGS["drain_timeout"],
    termination_grace_period_seconds=_TIMINGS["grace_period"],
)
# Scheduling, pulling, starting Python and connecting, before the runner's own clock runs.
RUNNER_START_SECONDS = 60
# The Job controller's back-off before the first retry.
JOB_FIRST_BACKOFF_SECONDS = 10
# Connections the runner holds at once: the migration lock's, the migration's and the
# lock-wait sampler's (alembic_pg_guard/_runner.py, _env.py, _locks.py).
RUNNER_CONNECTIONS = 3
# PgBouncer's own defaults, for a setting its Deployment leaves out.
PGBOUNCER_DEFAULTS = {
    "MAX_CLIENT_CONN": 100,
    "DEFAULT_POOL_SIZE": 20,
    "RESERVE_POOL_SIZE": 0,
    "MAX_DB_CONNECTIONS": 0,  # no limit
}


@dataclass(frozen=True)
class Manifest:
    file: str  # relative to deploy/kubernetes/
    obj: dict

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"


def manifest_files(folder: str | None = None) -> list[str]:
    """The files under deploy/kubernetes/ (or one folder of it), relative to it, in the
    order `kubectl apply -f FOLDER/` takes a folder's files: by name."""
    root = DEPLOY / folder if folder else DEPLOY
    files = [path for path in root.rglob("*") if path.is_file()]
    return sorted(path.relative_to(DEPLOY).as_posix() for path in files)


def read(file: str) -> list[Manifest]:
    documents = yaml.safe_load_all((DEPLOY / file).read_text())
    return [Manifest(file, document) for document in documents if document is not None]


def manifests(*, pgbouncer: bool = False) -> list[Manifest]:
    """The objects of a release, with the optional PgBouncer part or without it."""
    folders = BASE_FOLDERS + (PGBOUNCER_FOLDERS if pgbouncer else ())
    return [m for folder in folders for file in manifest_files(folder) for m in read(file)]


def objects(*, pgbouncer: bool = False) -> list[dict]:
    return [manifest.obj for manifest in manifests(pgbouncer=pgbouncer)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name or 'anything'}"
    return found[0]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "Job")]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: dict, name: str | None = None) -> dict:
    found = [c for c in containers(workload) if name in (None, c["name"])]
    assert len(found) == 1, f"{workload['metadata']['name']}: {len(found)} containers"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels only, as every selector here is) matches `labels`."""
    assert set(selector) <= {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


# --- a container's environment, as the kubelet builds it --------------------------------

_REFERENCE = re.compile(r"\$\$|\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")


def secret_placeholder(name: str, key: str) -> str:
    """Stands for a Secret's value, like the documented ones: secrets.token_urlsafe(32)'s
    alphabet and length (deterministic here, so a test can find it again)."""
    digest = hashlib.sha256(f"{name}/{key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's `$(NAME)` expansion: a defined NAME is replaced, `$$` is `$`, an
    undefined reference stays as written."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group("name"), match.group(0))

    return _REFERENCE.sub(substitute, value)


def environment(c: dict, objs: list[dict]) -> dict[str, str]:
    """The variables a container starts with (besides the image's ENV): envFrom in order
    (a later source wins; an optional ConfigMap that is not applied adds nothing), then
    env, each value expanded from what is defined before it. A Secret's value is
    `secret_placeholder()`."""
    config_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) <= {"configMapRef", "prefix"}, f"{c['name']}: envFrom {source}"
        ref = source["configMapRef"]
        config_map = config_maps.get(ref["name"])
        assert config_map or ref.get("optional"), f"{c['name']}: no ConfigMap {ref['name']}"
        if config_map:
            env |= {source.get("prefix", "") + k: v for k, v in config_map["data"].items()}
    for variable in c.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
            continue
        source = variable["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[variable["name"]] = secret_placeholder(ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[variable["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
        else:
            raise AssertionError(f"{c['name']}: {variable['name']} from {source}")
    return env


def secret_refs(c: dict) -> set[tuple[str, str]]:
    """(Secret, key) pairs a container reads."""
    refs = set()
    for variable in c.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.add((ref["name"], ref["key"]))
    for source in c.get("envFrom", []):
        assert "secretRef" not in source, f"{c['name']}: a whole Secret as envFrom"
    return refs


class ContainerSettings(Settings):
    """src/config.py's Settings from a container's variables alone: no .env, and nothing
    from the environment of the process running the tests."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args, **kwargs):
        return (init_settings,)


def settings(env: dict[str, str]) -> Settings:
    """What the app (or the runner) makes of these variables, validated as it would."""
    fields = set(Settings.model_fields)
    return ContainerSettings(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


def rollout(objs: list[dict]) -> Rollout:
    """The API Deployment's rolling update, as `REHEARSED` describes one (None for what
    it leaves out)."""
    deployment = one(objs, "Deployment", API)
    api = container(deployment, "api")
    update = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
    readiness = api.get("readinessProbe", {})
    pre_stop = api.get("lifecycle", {}).get("preStop", {})
    return Rollout(
        replicas=deployment["spec"].get("replicas"),
        max_surge=update.get("maxSurge"),
        max_unavailable=update.get("maxUnavailable"),
        readiness_period_seconds=readiness.get("periodSeconds"),
        readiness_timeout_seconds=readiness.get("timeoutSeconds"),
        readiness_failure_threshold=readiness.get("failureThreshold"),
        readiness_success_threshold=readiness.get("successThreshold"),
        pre_stop_seconds=pre_stop.get("sleep", {}).get("seconds"),
        drain_timeout_seconds=settings(environment(api, objs)).drain_timeout_seconds,
        termination_grace_period_seconds=pod_spec(deployment).get("terminationGracePeriodSeconds"),
    )


# --- quantities -------------------------------------------------------------------------

_SUFFIXES = {
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (`500m`, `1`, `256Mi`) as a number."""
    match = re.fullmatch(r"(?P<number>\d+(?:\.\d+)?)(?P<suffix>m|k|M|G|Ki|Mi|Gi)?", str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match["number"]) * _SUFFIXES[match["suffix"] or ""]


# --- the Secrets docs/kubernetes.md creates ---------------------------------------------


def shell_commands(text: str) -> Iterator[str]:
    """The commands of the fenced bash blocks, continuation lines joined."""
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        yield from (line.strip() for line in block.replace("\\\n", " ").splitlines())


def documented_secrets(text: str | None = None) -> dict[str, set[str]]:
    """{Secret name: its keys}, from the `kubectl create secret generic` lines."""
    text = KUBERNETES_DOCS.read_text() if text is None else text
    secrets: dict[str, set[str]] = {}
    for command in shell_commands(text):
        if " create secret generic " not in command:
            continue
        argv = shlex.split(command, comments=True)
        name = argv[argv.index("generic") + 1]
        assert option_value(argv, "-n") == NAMESPACE, command
        keys = {a.split("=", 2)[1] for a in argv if a.startswith("--from-literal=")}
        assert name not in secrets, f"{name} created twice"
        secrets[name] = keys
    return secrets


def option_value(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def secret_objects() -> list[dict]:
    """The documented Secrets as objects (values are placeholders), for the schema check."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {key: secret_placeholder(name, key) for key in sorted(keys)},
        }
        for name, keys in sorted(documented_secrets().items())
    ]


# --- connections to PostgreSQL -----------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """The database server's connections, from the ConfigMap's annotations."""

    max_connections: int
    superuser_reserved: int
    reserved: int
    other_clients: int

    @property
    def usable(self) -> int:
        """What roles without superuser (or pg_use_reserved_connections) may open."""
        return self.max_connections - self.superuser_reserved - self.reserved


def annotation(obj: dict, name: str) -> str:
    annotations = obj["metadata"].get("annotations", {})
    assert ANNOTATION + name in annotations, f"{obj['metadata']['name']}: no {ANNOTATION}{name}"
    return annotations[ANNOTATION + name]


def count_annotation(obj: dict, name: str) -> int:
    value = annotation(obj, name)
    assert value.isdigit(), f"{ANNOTATION}{name}: {value!r} is not a count"
    return int(value)


def budget(objs: list[dict]) -> Budget:
    config = one(objs, "ConfigMap", CONFIG)
    return Budget(
        max_connections=count_annotation(config, "postgres-max-connections"),
        superuser_reserved=count_annotation(config, "postgres-superuser-reserved-connections"),
        reserved=count_annotation(config, "postgres-reserved-connections"),
        other_clients=count_annotation(config, "postgres-other-clients"),
    )


@dataclass(frozen=True)
class Demand:
    """What one way of connecting asks of PostgreSQL at its peak, term by term."""

    terms: tuple[tuple[str, int], ...]  # (how it is counted, connections)
    budget: Budget

    @property
    def total(self) -> int:
        return sum(connections for _, connections in self.terms)

    @property
    def fits(self) -> bool:
        return self.total <= self.budget.usable

    def arithmetic(self) -> str:
        """One line, as docs/kubernetes.md shows it."""
        b = self.budget
        terms = " + ".join(how for how, _ in self.terms)
        room = (
            f"{b.usable} (max_connections {b.max_connections} - {b.superuser_reserved} "
            f"superuser-reserved - {b.reserved} reserved)"
        )
        return f"{terms} = {self.total} {'<=' if self.fits else '>'} {room}"


def api_peak_pods(objs: list[dict]) -> tuple[int, str]:
    """API pods that can exist at once: the HPA's maximum, a rollout's surge pod, and the
    old pod it replaced, which holds its connections while it drains."""
    hpa = one(objs, "HorizontalPodAutoscaler", API)
    surge = one(objs, "Deployment", API)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    maximum = hpa["spec"]["maxReplicas"]
    return maximum + 2 * surge, f"({maximum} HPA max + {surge} surging + {surge} draining)"


def job_connections(objs: list[dict]) -> int:
    job = one(objs, "Job")
    return count_annotation(job, "postgres-connections") * job["spec"].get("parallelism", 1)


def api_settings(objs: list[dict]) -> Settings:
    return settings(environment(container(one(objs, "Deployment", API), "api"), objs))


def common_terms(objs: list[dict]) -> tuple[tuple[str, int], ...]:
    """The migration Job and everyone else: there whichever way the API connects."""
    job, others = job_connections(objs), budget(objs).other_clients
    return (f"{job} (migration Job)", job), (f"{others} (other clients)", others)


def direct_demand(objs: list[dict]) -> Demand:
    """The API's pools straight to PostgreSQL (the base manifests)."""
    pods, why = api_peak_pods(objs)
    s = api_settings(objs)
    listener = 1 if s.cache_enabled else 0
    per_pod = s.db_pool_size + s.db_max_overflow + listener
    return Demand(
        (
            (
                f"{pods} API pods {why} x {per_pod} (pool {s.db_pool_size} + overflow "
                f"{s.db_max_overflow} + cache listener {listener})",
                pods * per_pod,
            ),
            *common_terms(objs),
        ),
        budget(objs),
    )


def pgbouncer_settings(objs: list[dict]) -> dict[str, int]:
    env = environment(container(one(objs, "Deployment", PGBOUNCER)), objs)
    return {name: int(env.get(name, default)) for name, default in PGBOUNCER_DEFAULTS.items()}


def pgbouncer_server_connections(objs: list[dict]) -> int:
    """Server connections one PgBouncer opens at most (its one database and user)."""
    p = pgbouncer_settings(objs)
    pool = p["DEFAULT_POOL_SIZE"] + p["RESERVE_POOL_SIZE"]
    return min(pool, p["MAX_DB_CONNECTIONS"]) if p["MAX_DB_CONNECTIONS"] else pool


def pgbouncer_demand(objs: list[dict]) -> Demand:
    """The API's pools through PgBouncer; the cache listeners and the Job still direct."""
    bouncer = one(objs, "Deployment", PGBOUNCER)
    update = bouncer["spec"]["strategy"]["rollingUpdate"]
    replicas, surge = bouncer["spec"]["replicas"], update["maxSurge"]
    bouncers = replicas + 2 * surge
    per_bouncer = pgbouncer_server_connections(objs)
    pods, _ = api_peak_pods(objs)
    listener = 1 if api_settings(objs).cache_enabled else 0
    return Demand(
        (
            (
                f"{bouncers} PgBouncer pods ({replicas} + {surge} surging + {surge} draining) "
                f"x {per_bouncer} (its server connections)",
                bouncers * per_bouncer,
            ),
            (f"{pods} API pods x {listener} (cache listener, direct)", pods * listener),
            *common_terms(objs),
        ),
        budget(objs),
    )


def pgbouncer_clients(objs: list[dict]) -> tuple[int, int]:
    """(client connections every API pool together may open, one PgBouncer's limit): the
    Service may send them all to one replica."""
    pods, _ = api_peak_pods(objs)
    s = api_settings(objs)
    return pods * (s.db_pool_size + s.db_max_overflow), pgbouncer_settings(objs)["MAX_CLIENT_CONN"]


@cache
def docs_text() -> str:
    return KUBERNETES_DOCS.read_text()


def repository_path(text: str) -> Iterator[Path]:
    """Repository paths a page names in backticks (deploy/, src/, tests/, docs/, ...)."""
    pattern = r"`((?:deploy|src|tests|docs|alembic-pg-guard|devtools)/[\w./-]*)`"
    for path in re.findall(pattern, text):
        yield PROJECT_ROOT / path
