"""Every object in deploy/kubernetes/ (and every Secret docs/kubernetes.md creates) against
the Kubernetes API's own schemas, offline, in strict mode (an unknown or misspelt field
fails), for one Kubernetes version: the schemas kubernetes-validate ships."""

import copy

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from tests.deploy.manifests import (
    BASE_FOLDERS,
    KUBERNETES_VERSION,
    NAMESPACE,
    PGBOUNCER_FOLDERS,
    manifest_files,
    manifests,
    read,
    secret_objects,
)

ALL = manifests(pgbouncer=True)


def validate(obj: dict) -> str:
    """The version it validated against; raises for a mismatch and for an unknown kind
    (kubernetes-validate's SchemaNotFoundError, which its command line only warns about)."""
    return kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_version_is_the_newest_the_package_ships():
    shipped = all_versions()
    assert KUBERNETES_VERSION in shipped, f"kubernetes-validate ships {shipped}"
    newest = max(shipped, key=Version)
    assert Version(KUBERNETES_VERSION) == Version(newest), (
        f"kubernetes-validate now ships {newest}: validate against it (KUBERNETES_VERSION)"
    )


def test_every_manifest_file_is_read_and_holds_one_object():
    """A file added to deploy/kubernetes/ is validated, or this fails: nothing is skipped.
    One object per file: pre-commit's check-yaml reads one YAML document."""
    folders = BASE_FOLDERS + PGBOUNCER_FOLDERS
    files = manifest_files()
    assert files == sorted(f for folder in folders for f in manifest_files(folder)), (
        f"a file outside {', '.join(folders)}: {files}"
    )
    for file in files:
        assert file.endswith(".yaml"), file
        assert len(read(file)) == 1, f"{file}: one object per file"
    # kubectl takes a folder's files by name: the Namespace before what lives in it.
    assert read(manifest_files("base")[0])[0].kind == "Namespace"


@pytest.mark.parametrize("manifest", ALL, ids=[m.id for m in ALL])
def test_object_validates_strictly(manifest):
    assert validate(manifest.obj) == ".".join(KUBERNETES_VERSION.split(".")[:2])
    namespace = manifest.obj["metadata"].get("namespace")
    assert namespace == (None if manifest.kind == "Namespace" else NAMESPACE), manifest.id


SECRETS = secret_objects()


@pytest.mark.parametrize("secret", SECRETS, ids=[s["metadata"]["name"] for s in SECRETS])
def test_documented_secret_validates_strictly(secret):
    validate(secret)


def test_objects_are_unique_and_the_release_is_complete():
    ids = [m.id for m in ALL]
    assert len(ids) == len(set(ids)), ids
    kinds = {m.kind for m in ALL}
    assert {
        "Namespace",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds
    assert not any(m.kind == "Secret" for m in ALL), "git never holds a Secret"
    assert {s["metadata"]["name"] for s in SECRETS} == {"alembic-stuff-app", "alembic-stuff-owner"}


def deployment() -> dict:
    return copy.deepcopy(next(m.obj for m in ALL if m.kind == "Deployment"))


@pytest.mark.parametrize(
    "breakage",
    [
        "a misspelt field",
        "a number where Kubernetes wants a string",
        "an unknown kind",
    ],
)
def test_strict_validation_refuses(breakage):
    """The check has teeth: what a loose schema (or a warning) would let through."""
    obj = deployment()
    if breakage == "a misspelt field":
        obj["spec"]["replica"] = obj["spec"].pop("replicas")
    elif breakage == "a number where Kubernetes wants a string":
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = 1
    else:
        obj["kind"] = "Deploymnet"
    with pytest.raises(
        (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)
    ):
        validate(obj)
