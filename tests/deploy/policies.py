"""NetworkPolicy evaluation, as a network plugin that enforces policies decides a
connection: podSelector, namespaceSelector and ports against the labels of the pods at
both ends (ipBlock peers and endPort ranges are not used by Cairn's manifests; an
ipBlock peer matches nothing here, no pod and no place outside)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Pod:
    """One end of a connection: a pod's labels in a namespace, or (pod=False) a place
    outside the cluster, such as a managed database or S3."""

    namespace: str
    labels: Labels = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports
    namespace_labels: Labels = field(default_factory=dict)
    pod: bool = True

    def namespace_labels_with_name(self) -> dict[str, str]:
        # Kubernetes labels every namespace with its name.
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def outside(port_hint: str = "") -> Pod:
    """Somewhere outside the cluster (DNS name that no Service answers for)."""
    return Pod(namespace=f"<outside {port_hint}>", pod=False)


def selects(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression(e, labels) for e in selector.get("matchExpressions") or [])


def _expression(expression: Mapping[str, Any], labels: Labels) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = set(expression.get("values") or [])
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {operator!r}")


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Pod) -> bool:
    if not other.pod:
        return False  # only ipBlock peers name places outside the cluster
    if "ipBlock" in peer or not ({"podSelector", "namespaceSelector"} & peer.keys()):
        # An ipBlock peer names addresses, which no pod is judged by here; read as
        # "no selector", it would let in every pod of the namespace.
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels_with_name()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(rule_ports: list[Mapping[str, Any]] | None, port: int, target: Pod) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port:
            return True
        if isinstance(wanted, str) and target.ports.get(wanted) == port:
            return True
    return False


def _rule_allows(
    rule: Mapping[str, Any], peers_key: str, namespace: str, other: Pod, port: int, target: Pod
) -> bool:
    peers = rule.get(peers_key)
    if peers and not any(_peer_matches(p, namespace, other) for p in peers):
        return False
    return _port_matches(rule.get("ports"), port, target)


def _policies_on(policies: Iterable[Mapping[str, Any]], pod: Pod, kind: str) -> list[Any]:
    if not pod.pod:
        return []
    return [
        p
        for p in policies
        if p["metadata"].get("namespace", pod.namespace) == pod.namespace
        and selects(p["spec"]["podSelector"], pod.labels)
        and kind in _policy_types(p["spec"])
    ]


def _policy_types(spec: Mapping[str, Any]) -> list[str]:
    """policyTypes as written, else what Kubernetes fills in: Ingress always, and
    Egress when the policy has egress rules."""
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def allowed(policies: Iterable[Mapping[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether a TCP connection from source to target's port passes every policy: the
    target's ingress policies (if any select it) and the source's egress policies."""
    policies = list(policies)
    ingress = _policies_on(policies, target, "Ingress")
    admitted = not ingress or any(
        _rule_allows(rule, "from", target.namespace, source, port, target)
        for policy in ingress
        for rule in policy["spec"].get("ingress") or []
    )
    egress = _policies_on(policies, source, "Egress")
    released = not egress or any(
        _rule_allows(rule, "to", source.namespace, target, port, target)
        for policy in egress
        for rule in policy["spec"].get("egress") or []
    )
    return admitted and released
