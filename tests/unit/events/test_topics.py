from shared.events.topics import PRIMARY_TOPICS, all_topics, dlq_of


def test_every_consumed_topic_has_a_dead_letter_topic() -> None:
    names = {t.name for t in all_topics()}
    consumed = [topic for topic in PRIMARY_TOPICS if topic.consumed]
    assert consumed
    for topic in consumed:
        assert dlq_of(topic.name) in names


def test_compacted_topics_bound_how_long_a_tombstoned_key_lingers() -> None:
    compacted = [t for t in all_topics() if t.compacted]
    assert {t.name for t in compacted} == {"accounts.contacts", "analytics.trends"}
    for topic in compacted:
        config = topic.config()
        assert config["cleanup.policy"] == "compact"
        assert int(config["max.compaction.lag.ms"]) <= 3_600_000
        assert int(config["segment.ms"]) <= int(config["max.compaction.lag.ms"])


def test_topic_names_are_unique() -> None:
    names = [t.name for t in all_topics()]
    assert len(names) == len(set(names))


def test_acks_all_waits_for_two_copies_when_there_are_three() -> None:
    for topic in all_topics():
        assert topic.config()["min.insync.replicas"] == "1"  # a single local broker
        assert topic.config(replication_factor=3)["min.insync.replicas"] == "2"
