"""docs/kubernetes.md against the manifests: every object in its file, the release order
(Job, wait, rollout), the numbers it quotes (the connection arithmetic, the Job's
deadline), its links, the place for the rehearsal's report; the README's one line."""

import copy
import re
from importlib.metadata import version

from src.config import PROJECT_ROOT
from tests.deploy.manifests import (
    API,
    JOB_FIRST_BACKOFF_SECONDS,
    KUBERNETES_DOCS,
    KUBERNETES_VERSION,
    RUNNER_START_SECONDS,
    container,
    direct_demand,
    docs_text,
    environment,
    manifest_files,
    manifests,
    objects,
    one,
    pgbouncer_clients,
    pgbouncer_demand,
    repository_path,
    settings,
    shell_commands,
)

ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<kind>\w+) \| `(?P<name>[^`]+)` \|", re.M)


def test_the_page_lists_every_object_in_its_file():
    listed = {(m["file"], m["kind"], m["name"]) for m in ROW.finditer(docs_text())}
    actual = {(f"deploy/kubernetes/{m.file}", m.kind, m.name) for m in manifests(pgbouncer=True)}
    assert listed == actual, (
        f"missing from the table: {sorted(actual - listed)}; not in the manifests: "
        f"{sorted(listed - actual)}"
    )


def test_a_release_runs_the_job_then_waits_then_rolls_out():
    commands = list(shell_commands(docs_text()))

    def first(pattern: str) -> int:
        found = [i for i, c in enumerate(commands) if re.search(pattern, c)]
        assert found, f"docs/kubernetes.md never runs {pattern!r}"
        return found[0]

    base = first(r"kubectl apply -f deploy/kubernetes/base/$")
    secret = first(r"kubectl -n \S+ create secret")
    job = first(r"kubectl apply -f deploy/kubernetes/migrate/job\.yaml -o name")
    wait = first(r"kubectl -n \S+ wait --for=condition=complete")
    api = first(r"kubectl apply -f deploy/kubernetes/api/$")
    status = first(r"kubectl -n \S+ rollout status deployment/" + API)
    assert base < secret < job < wait < api < status
    steps = {f"deploy/kubernetes/{folder}/" for folder in ("base", "api", "pgbouncer")}
    steps |= {f"deploy/kubernetes/{file}" for file in manifest_files("migrate")}
    for command in commands:
        if command.startswith("kubectl apply"):
            (target,) = re.findall(r"-f (\S+)", command)
            assert target in steps, f"{command}: one step at a time (the Job must finish first)"
            assert (PROJECT_ROOT / target).exists(), target


def test_the_page_shows_the_connection_arithmetic():
    text = docs_text()
    direct, through = direct_demand(objects()), pgbouncer_demand(objects(pgbouncer=True))
    assert direct.arithmetic() in text
    assert through.arithmetic() in text
    clients, limit = pgbouncer_clients(objects(pgbouncer=True))
    assert f"= {clients} <= `MAX_CLIENT_CONN` {limit}" in text
    objs = objects()
    hpa_max = one(objs, "HorizontalPodAutoscaler", API)["spec"]["maxReplicas"]

    def at(maximum: int):
        changed = copy.deepcopy(objs)
        one(changed, "HorizontalPodAutoscaler", API)["spec"]["maxReplicas"] = maximum
        return direct_demand(changed)

    fits, overflows = at(hpa_max + 1), at(hpa_max + 2)
    assert fits.fits and not overflows.fits
    sentence = (
        f"An HPA maximum of {hpa_max + 1} would still fit ({fits.total}); "
        f"{hpa_max + 2} would not ({overflows.total})"
    )
    assert sentence in " ".join(text.split()), sentence


def test_the_page_quotes_the_jobs_deadline():
    objs = objects()
    job = one(objs, "Job")
    spec, runner = job["spec"], settings(environment(container(job), objs))
    attempts = spec["backoffLimit"] + 1
    text = " ".join(docs_text().split())
    assert f"`activeDeadlineSeconds` ({spec['activeDeadlineSeconds']})" in text
    needed = (
        f"({runner.migration_lock_wait_seconds:g} s lock wait + "
        f"{runner.migration_lock_retry_total_seconds:g} s of retries + one "
        f"{runner.migration_statement_timeout_ms / 1000:g} s statement + "
        f"{RUNNER_START_SECONDS} s to start) x {attempts} + {JOB_FIRST_BACKOFF_SECONDS} s back-off"
    )
    assert needed in text, needed


def test_the_page_names_the_versions_it_validates_against():
    text = docs_text()
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert f"Kubernetes {minor}" in text
    assert f"`kubernetes-validate` ships ({version('kubernetes-validate')}" in text


def test_the_page_has_a_place_for_the_rolling_rehearsals_report():
    assert re.search(r"^## The rehearsed sequence$", docs_text(), re.M)
    assert "rehearse --rolling" in docs_text()


def test_paths_and_links_resolve():
    text = docs_text()
    for path in repository_path(text):
        assert path.exists(), f"docs/kubernetes.md names {path.relative_to(PROJECT_ROOT)}"
    for target, anchor in re.findall(r"\]\(([^)#\s]+\.md)(?:#([\w-]+))?\)", text):
        page = (KUBERNETES_DOCS.parent / target).resolve()
        assert page.is_file(), f"docs/kubernetes.md links to {target}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"{target}#{anchor}"


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_links_the_page_in_one_line():
    readme = (PROJECT_ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "(docs/kubernetes.md)" in line]
    assert len(lines) == 1, lines
