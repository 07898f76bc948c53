"""`modelcycle operator`: wire the per-kind reconcilers into kopf and run.

Kopf provides the watch streams (with timeouts), peering, and the liveness endpoint. Only
`on.event` and `on.startup` handlers are used: they persist nothing on user objects (no
finalizers, no progress annotations), and the Runner decides when and how often to reconcile.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from typing import Any, cast

import kopf
import prometheus_client

from modelcycle import GROUP, VERSION, errors, kubeclient
from modelcycle.builders import meta, pods
from modelcycle.controllers import cache, kube, memory, rbac, runtime, scheduler
from modelcycle.controllers.registry import REGISTRY

logger = logging.getLogger("modelcycle.operator")
CHILD_KINDS = (("batch", "v1", "jobs", "Job"), ("apps", "v1", "deployments", "Deployment"))


def configure(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig to use outside a cluster (default: in-cluster, then ~/.kube/config)",
    )
    parser.add_argument(
        "--workload-image",
        default=env("MODELCYCLE_WORKLOAD_IMAGE", pods.WorkloadSettings.image),
        help="image of data, training, validation and serving pods",
    )
    parser.add_argument(
        "--artifact-claim",
        default=env("MODELCYCLE_ARTIFACT_CLAIM", "modelcycle-artifacts"),
        help="PersistentVolumeClaim mounted at /artifacts in workload pods",
    )
    parser.add_argument(
        "--workload-service-account",
        default=env("MODELCYCLE_WORKLOAD_SERVICE_ACCOUNT"),
        help="ServiceAccount of workload pods (they never get its token)",
    )
    parser.add_argument(
        "--s3-uri", default=env("MODELCYCLE_S3_URI"), help="use s3://bucket/prefix as the store"
    )
    parser.add_argument(
        "--s3-endpoint", default=env("MODELCYCLE_S3_ENDPOINT"), help="S3-compatible endpoint URL"
    )
    parser.add_argument(
        "--s3-secret",
        default=env("MODELCYCLE_S3_SECRET"),
        help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=30.0, help="periodic full reconcile (default 30)"
    )
    parser.add_argument(
        "--backoff-max-seconds", type=float, default=120.0, help="ceiling of the retry backoff (default 120)"
    )
    parser.add_argument(
        "--monitor-stats-access",
        choices=("proxy", "direct"),
        default=env("MODELCYCLE_MONITOR_STATS_ACCESS", "proxy"),
        help="how ModelMonitors reach serving pods: the API server's pod proxy (default; works outside "
        "the cluster) or direct HTTP to the pod IP (in-cluster only)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=32,
        help="reconciles of different objects that may run at once (default 32; they mostly wait "
        "for the API server)",
    )
    parser.add_argument("--liveness-port", type=int, default=8080, help="kopf liveness endpoint /healthz")
    parser.add_argument("--metrics-port", type=int, default=8081, help="Prometheus metrics (0 disables)")
    parser.add_argument("--bind-address", default="0.0.0.0", help="address of the health and metrics servers")
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering name for leader handover between replicas (default: standalone)",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority of this instance")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--print-rbac",
        action="store_true",
        help="print the ClusterRole the operator needs (the union of every controller's RBAC_RULES) and exit",
    )


def settings_from(args: argparse.Namespace) -> runtime.Settings:
    workload = pods.WorkloadSettings(
        image=args.workload_image,
        artifact_claim=args.artifact_claim,
        s3_uri=args.s3_uri,
        s3_endpoint=args.s3_endpoint,
        s3_secret=args.s3_secret,
        service_account=args.workload_service_account,
    )
    return runtime.Settings(
        workload=workload,
        resync_seconds=args.resync_seconds,
        backoff_max_seconds=args.backoff_max_seconds,
        stats_access=args.monitor_stats_access,
    )


def connection_info(config: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from a kubernetes.client.Configuration (kubeconfig or in-cluster)."""
    header = kubeclient.authorization(config)
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf's diff-base is for change handlers, and the operator has none (`on.event` only); yet by
    default kopf deep-copies every object on every watch event to build it. Nothing is built,
    fetched or stored."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(runner: scheduler.Runner, *, priority: int) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Watches that go silent are the classic kopf pitfall: bound them on both sides.
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        settings.posting.enabled = False  # we post our own Events with reasons
        settings.persistence.diffbase_storage = NoDiffBase()
        for child in CHILD_KINDS:  # only the children we label, filtered by the API server
            settings.watching.label_selectors[child[0], child[2]] = meta.OWNER_KIND
        settings.peering.priority = priority
        await runner.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        runner.stop()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # A plain OperatorRegistry has none of kopf's default login handlers: without this one kopf
        # runs out of credentials. Log in exactly as the operator's own REST client does.
        return connection_info(runner.ctx.client.kube.configuration)

    @kopf.on.probe(id="reconciles", registry=registry)
    def reconciles_probe(**_: Any) -> float:
        return sum(sample.value for metric in runtime.RECONCILES.collect() for sample in metric.samples)

    for kind in (controller.kind for controller in runner.registry.values()):

        def make_handler(kind_name: str) -> Any:
            async def on_event(event: dict[str, Any], **_: Any) -> None:
                obj = event.get("object") or {}
                if obj.get("metadata", {}).get("uid"):
                    await runner.on_object_event(kind_name, event.get("type") or "ADDED", obj)

            return on_event

        kopf.on.event(GROUP, VERSION, kind.plural, registry=registry, id=f"{kind.singular}-events")(
            make_handler(kind.kind)
        )

    for group, version, plural, child_kind in CHILD_KINDS:

        def make_child_handler(kind_name: str) -> Any:
            async def on_child(event: kopf.RawEvent, **_: Any) -> None:
                if event.get("object"):
                    await runner.on_child_event(
                        kind_name, event.get("type") or "ADDED", dict(event["object"])
                    )

            return on_child

        kopf.on.event(
            group,
            version,
            plural,
            registry=registry,
            id=f"{plural}-events",
            labels={meta.OWNER_KIND: kopf.PRESENT},
        )(make_child_handler(child_kind))
    return registry


def run(args: argparse.Namespace) -> int:
    if args.print_rbac:
        print(rbac.cluster_role_yaml(peering=args.peering is not None), end="")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs "Handler ... succeeded" for every watch event; the operator logs its Events.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.kubeconfig:
        if not os.path.exists(args.kubeconfig):
            raise errors.UserError(f"kubeconfig {args.kubeconfig} does not exist")
        os.environ["KUBECONFIG"] = args.kubeconfig
    memory.limit_arenas()
    configuration = kube.load_configuration(kubeconfig=args.kubeconfig)
    # One kept-alive connection per thread that sends: urllib3 discards (and each request then
    # opens, with a TLS handshake) every connection beyond the pool's size (default 5 per core).
    configuration.connection_pool_maxsize = args.workers + scheduler.EVENT_POSTERS + 2
    client = kube.Client(configuration)
    runner = scheduler.Runner(
        runtime.Context(client=client, settings=settings_from(args), store=cache.Store()),
        registry=REGISTRY,
        workers=args.workers,
        namespaces=args.namespace,
    )
    registry = build_registry(runner, priority=args.priority)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port, addr=args.bind_address)
    namespaces = list(args.namespace)
    kopf.run(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=f"http://{args.bind_address}:{args.liveness_port}/healthz",
    )
    return 0
