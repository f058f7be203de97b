"""Single-node Kafka (KRaft, broker and controller in one JVM) from the Maven-built cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.local import procs
from deploy.local.layout import HOST, REPO_ROOT, Layout
from deploy.local.tls import tls_files
from shared.bus.topic_admin import TopicCreationFailed
from shared.bus.topic_admin import ensure_topics as shared_ensure_topics
from shared.config import PlatformSettings
from shared.events.topics import Topic, all_topics

log = logging.getLogger(__name__)

NAME = "kafka"
VERSION = "4.1.1"
READY_TIMEOUT = 90.0
T = TypeVar("T")
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
JVM_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
JAVA_MIN = 17
JAVA_INSTALL = "apt-get install openjdk-17-jre-headless"
# `java -version` (on stderr): openjdk version "17.0.9" ..., java version "1.8.0_392" ...
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def bootstrap(layout: Layout) -> str:
    return f"{HOST}:{layout.ports.kafka}"


def libs_dir(layout: Layout) -> Path:
    return layout.cache / f"kafka-{VERSION}" / "libs"


def _classpath(layout: Layout) -> str:
    return f"{libs_dir(layout)}/*"


def _home(layout: Layout) -> Path:
    return layout.state / "kafka"


def _keystore_path(layout: Layout) -> Path:
    return _home(layout) / "keystore.pem"


def _write_keystore(layout: Layout) -> bool:
    """Kafka's PEM keystore: the PKCS#8 key followed by the certificate chain.

    server.pem already holds the chain (leaf, then CA); Java refuses a repeated cert.
    """
    tls = tls_files(layout.tls)
    pem = tls.key.read_text() + tls.cert.read_text()
    return procs.write_atomic(_keystore_path(layout), pem, mode=0o600)


def _properties_path(layout: Layout) -> Path:
    return _home(layout) / "server.properties"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def ensure_libs(layout: Layout) -> Path:
    """Fetch the broker jars with Maven; again whenever the pom changed.

    Maven writes into a temporary sibling that is renamed at the end, so a killed fetch
    never leaves a half cache behind.
    """
    libs = libs_dir(layout)
    stamp = libs / ".pom.sha256"
    if stamp.exists() and stamp.read_text().strip() == _pom_digest():
        return libs
    if (libs / f"kafka_2.13-{VERSION}.jar").exists() and shutil.which("mvn") is None:
        log.warning("%s may be stale (pom changed) but mvn is missing; using it", libs)
        return libs
    mvn = procs.require_binary("mvn", "apt-get install -y maven")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
    try:
        log.info("fetching Kafka %s jars into %s", VERSION, libs)
        argv = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]  # fmt: skip
        procs.run(argv, "mvn dependency:copy-dependencies", timeout=900)
        (staging / stamp.name).write_text(_pom_digest())
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def render_properties(layout: Layout) -> str:
    ports = layout.ports
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{ports.kafka_controller}",
        "listeners": (
            f"PLAINTEXT://{HOST}:{ports.kafka},SSL://{HOST}:{ports.kafka_tls},"
            f"CONTROLLER://{HOST}:{ports.kafka_controller}"
        ),
        "advertised.listeners": f"PLAINTEXT://{HOST}:{ports.kafka},SSL://{HOST}:{ports.kafka_tls}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT",
        # The SSL listener (P-10: TLS to Kafka is a setting) presents the local CA's
        # certificate; clients verify it with tls/ca.pem.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(_keystore_path(layout)),
        "ssl.client.auth": "none",
        "log.dirs": str(_home(layout) / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The crash tests take their workers' session timeout down to a few seconds
        # (IMT_KAFKA_SESSION_TIMEOUT_SECONDS): a killed worker's partitions move sooner.
        "group.min.session.timeout.ms": "1000",
        # Tests check that tombstoned contact cards really leave compacted topics.
        "log.cleaner.backoff.ms": "5000",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


# Per-partition chatter at INFO would bury what matters (start-up, groups, errors).
QUIET_LOGGERS = (
    "org.apache.kafka.clients",
    "org.apache.kafka.controller",
    "org.apache.kafka.storage",
    "org.apache.kafka.coordinator.common.runtime",
    "org.apache.kafka.image",
    "kafka.cluster",
    "kafka.log",
    "kafka.server.metadata",
    "kafka.request.logger",
    "state.change.logger",
)


def render_log4j(layout: Layout) -> str:
    quiet = "".join(
        f"logger.q{i}.name = {name}\nlogger.q{i}.level = WARN\n"
        for i, name in enumerate(QUIET_LOGGERS)
    )
    return f"""\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {layout.log(NAME)}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
{quiet}"""


def java_major(version_output: str) -> int | None:
    """Java's feature version from ``java -version``'s output (1.8.0 is 8), if it says."""
    found = _JAVA_VERSION.search(version_output)
    if found is None:
        return None
    major = int(found[1])
    return int(found[2]) if major == 1 and found[2] else major


def require_java() -> None:
    """Java 17 or later, checked before the jars are fetched: an older one would only
    fail once Kafka starts (UnsupportedClassVersionError)."""
    java = procs.require_binary("java", JAVA_INSTALL)
    try:
        done = subprocess.run(  # noqa: S603 - the java found on PATH, no shell
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise procs.StackError(f"{java} -version failed: {exc}") from exc
    major = java_major(done.stderr + done.stdout)
    if major is None:
        log.warning("cannot tell the version of %s; Kafka %s needs Java 17+", java, VERSION)
    elif major < JAVA_MIN:
        raise procs.StackError(
            f"Kafka 4.x needs Java {JAVA_MIN} or later (found {major}): {JAVA_INSTALL}"
        )


def _java(layout: Layout, main: str, *args: str) -> list[str]:
    java = procs.require_binary("java", JAVA_INSTALL)
    log4j = f"-Dlog4j2.configurationFile={_home(layout) / 'log4j2.properties'}"
    return [java, *JVM_OPTS, log4j, "-cp", _classpath(layout), main, *args]


def _format_storage(layout: Layout) -> None:
    if (_home(layout) / "data" / "meta.properties").exists():
        return
    cluster_id = procs.run(
        _java(layout, "kafka.tools.StorageTool", "random-uuid"), "kafka storage random-uuid"
    ).strip()
    props = str(_properties_path(layout))
    argv = _java(layout, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", props)
    procs.run(argv, "kafka storage format")


def _marker(layout: Layout) -> str:
    return str(_properties_path(layout))


def running_pid(layout: Layout) -> int | None:
    return procs.our_pid(layout.pidfile(NAME), _marker(layout))


async def _admin_call(layout: Layout, call: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(layout), request_timeout_ms=10_000)
    try:
        await admin.start()
        return await call(admin)
    finally:
        await admin.close()


async def _answers(layout: Layout) -> bool:
    try:
        await asyncio.wait_for(_admin_call(layout, lambda a: a.list_topics()), 10)
    except Exception:  # any failure means "not ready yet"
        return False
    return True


def answers(layout: Layout) -> bool:
    """A real metadata request succeeds (an open port alone can be a starting JVM)."""
    return procs.port_open(layout.ports.kafka) and asyncio.run(_answers(layout))


def _start(layout: Layout) -> int:
    procs.require_free(layout.ports.kafka, "Kafka", "IMT_KAFKA_PORT")
    procs.require_free(
        layout.ports.kafka_controller, "Kafka controller", "IMT_KAFKA_CONTROLLER_PORT"
    )
    procs.require_free(layout.ports.kafka_tls, "Kafka TLS listener", "IMT_KAFKA_TLS_PORT")
    require_java()
    ensure_libs(layout)
    _format_storage(layout)
    argv = _java(layout, "kafka.Kafka", str(_properties_path(layout)))
    log.info("starting Kafka on %s", bootstrap(layout))
    return procs.spawn(argv, layout.log(NAME), layout.pidfile(NAME), cwd=_home(layout))


def up(layout: Layout) -> str:
    """Start (or reuse) the broker, wait until it serves metadata, create the topics."""
    home = _home(layout)
    home.mkdir(parents=True, exist_ok=True)
    changed = _write_keystore(layout)
    changed |= procs.write_atomic(_properties_path(layout), render_properties(layout))
    changed |= procs.write_atomic(home / "log4j2.properties", render_log4j(layout))
    pid = running_pid(layout)
    if pid and changed:
        log.warning("Kafka config changed; restart to apply: stack.py down --only kafka && up")
    pid = pid or _start(layout)

    def alive() -> bool:
        return procs.pid_alive(pid)

    if not procs.wait_for(lambda: answers(layout), READY_TIMEOUT, alive):
        why = "exited during start-up" if not alive() else f"not ready after {READY_TIMEOUT:.0f}s"
        raise procs.failure("Kafka", layout.log(NAME), why)
    asyncio.run(ensure_topics(layout, all_topics()))
    return f"PLAINTEXT://{bootstrap(layout)}"


async def ensure_topics(layout: Layout, topics: tuple[Topic, ...]) -> None:
    """Create missing topics and bring existing ones' settings to the registry's; one
    short of partitions stops the start with what to fix (never grown)."""
    settings = PlatformSettings(kafka_bootstrap=bootstrap(layout))
    try:
        report = await shared_ensure_topics(settings, topics)
    except TopicCreationFailed as exc:
        raise procs.StackError(str(exc)) from exc
    if report.reconciled:
        log.warning("Kafka: settings reset to the registry's on %s", ", ".join(report.reconciled))


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    config: dict[str, str]


async def describe_topics(layout: Layout) -> list[TopicInfo]:
    """Every topic on the broker (internal ones excluded) with its explicit settings."""

    async def fetch(admin: AIOKafkaAdminClient) -> list[TopicInfo]:
        meta = [t for t in await admin.describe_topics() if not t["is_internal"]]
        names = sorted(t["topic"] for t in meta)
        partitions = {t["topic"]: len(t["partitions"]) for t in meta}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources) if resources else []:
            for _code, _msg, _type, name, entries in response.resources:
                # Entry: (name, value, read_only, config_source, is_sensitive, ...);
                # source 1 is DYNAMIC_TOPIC_CONFIG, i.e. set at creation or by alter.
                configs[name] = {e[0]: e[1] for e in entries if e[3] == 1}
        return [TopicInfo(n, partitions[n], configs.get(n, {})) for n in names]

    return await _admin_call(layout, fetch)


def status(layout: Layout) -> tuple[bool, str]:
    ready = procs.port_open(layout.ports.kafka)
    ports = (layout.ports.kafka, layout.ports.kafka_controller)
    return procs.describe(running_pid(layout), ready, ports, f"PLAINTEXT://{bootstrap(layout)}")


def down(layout: Layout, wipe: bool = False) -> None:
    state = _home(layout) if wipe else None
    procs.stop_daemon(running_pid(layout), layout.pidfile(NAME), state, timeout=30)
