"""The Kubernetes manifests (deploy/kubernetes/), checked offline: no cluster, no network."""
