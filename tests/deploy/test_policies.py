"""The NetworkPolicy evaluator the deployment tier judges connections with decides as
Kubernetes documents: which peers match, which ports, and which policy types a policy
has when it does not say."""

from __future__ import annotations

from typing import Any

from tests.deploy.policies import Pod, allowed, outside

NS = "cairn"
SERVER = Pod(NS, {"app": "server"}, {"grpc": 50051})
CLIENT = Pod(NS, {"app": "client"})
ELSEWHERE = Pod("team-a", {"app": "client"}, namespace_labels={"team": "a"})


def _policy(spec: dict[str, Any], selected: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"podSelector": {"matchLabels": selected or {"app": "server"}}, **spec},
    }


def _ingress_from(*peers: dict[str, Any], port: int | str = 50051) -> dict[str, Any]:
    return _policy({"ingress": [{"from": list(peers), "ports": [{"port": port}]}]})


def test_an_ip_block_peer_matches_no_pod() -> None:
    policy = _ingress_from({"ipBlock": {"cidr": "10.0.0.0/8"}})
    assert not allowed([policy], CLIENT, SERVER, 50051)
    assert not allowed([policy], ELSEWHERE, SERVER, 50051)
    assert not allowed([policy], outside("db.example.com"), SERVER, 50051)


def test_a_pod_selector_peer_matches_pods_of_the_policys_namespace() -> None:
    policy = _ingress_from({"podSelector": {"matchLabels": {"app": "client"}}})
    assert allowed([policy], CLIENT, SERVER, 50051)
    assert not allowed([policy], ELSEWHERE, SERVER, 50051)
    assert not allowed([policy], Pod(NS, {"app": "other"}), SERVER, 50051)


def test_a_namespace_selector_peer_matches_pods_of_the_namespaces_it_selects() -> None:
    policy = _ingress_from(
        {
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        }
    )
    assert allowed([policy], ELSEWHERE, SERVER, 50051)
    assert not allowed([policy], CLIENT, SERVER, 50051)


def test_ports_by_number_and_by_container_port_name() -> None:
    peer: dict[str, Any] = {"podSelector": {}}
    assert allowed([_ingress_from(peer, port="grpc")], CLIENT, SERVER, 50051)
    assert not allowed([_ingress_from(peer, port="grpc")], CLIENT, SERVER, 9090)
    assert not allowed([_ingress_from(peer, port=50052)], CLIENT, SERVER, 50051)


def test_policy_types_left_out_are_ingress_plus_egress_when_egress_rules_exist() -> None:
    """Kubernetes fills in policyTypes: Ingress always, Egress when spec.egress is
    there; so a policy with an egress rule restricts what its pods reach."""
    only_to_servers = _policy(
        {"egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}]}]},
        selected={"app": "client"},
    )
    database = Pod(NS, {"app": "database"}, {"postgres": 5432})
    assert allowed([only_to_servers], CLIENT, SERVER, 50051)
    assert not allowed([only_to_servers], CLIENT, database, 5432)
    # Its Ingress type holds too: with no ingress rules, nothing comes in.
    assert not allowed([only_to_servers], SERVER, CLIENT, 8080)


def test_policy_types_left_out_without_egress_rules_are_ingress_only() -> None:
    ingress_only = _policy({"ingress": []}, selected={"app": "client"})
    assert allowed([ingress_only], CLIENT, SERVER, 50051)  # egress not restricted
    assert not allowed([ingress_only], SERVER, CLIENT, 8080)


def test_policy_types_as_written_win() -> None:
    egress_only = _policy({"policyTypes": ["Egress"], "egress": []}, selected={"app": "client"})
    assert not allowed([egress_only], CLIENT, SERVER, 50051)
    assert allowed([egress_only], SERVER, CLIENT, 8080)  # ingress not restricted
