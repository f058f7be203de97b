-- Analytics keeps aggregates only. No IP address, user agent, user id, cookie or full
-- URL is ever stored: pages are scrubbed paths, referrers are hosts, and the only
-- per-visitor value is a daily-salted hash (salt in memory only), kept in the
-- per-window sets below for at most IMT_ANALYTICS_VISITOR_SET_HOURS.

-- One row per (site, grain, window): the publication state of the window.
CREATE TABLE trend_windows (
    site               text NOT NULL,
    grain              text NOT NULL CHECK (grain IN ('minute', 'hour', 'day')),
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL,
    revision           bigint NOT NULL DEFAULT 0,
    published_revision bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site, grain, window_start)
);
CREATE INDEX trend_windows_unpublished ON trend_windows (window_end)
    WHERE revision > published_revision;

-- Counts per cell; dimension 'total' (value '') is the whole window.
CREATE TABLE trend_cells (
    site            text NOT NULL,
    grain           text NOT NULL,
    window_start    timestamptz NOT NULL,
    dimension       text NOT NULL
        CHECK (dimension IN ('total', 'page', 'referrer_host', 'device_class')),
    value           text NOT NULL,
    visits          bigint NOT NULL CHECK (visits >= 0),
    unique_visitors bigint NOT NULL CHECK (unique_visitors >= 0),
    PRIMARY KEY (site, grain, window_start, dimension, value)
);

-- Load-time histogram per cell (bucket index into domain.windows.LOAD_BUCKETS_MS).
CREATE TABLE trend_cell_load_times (
    site         text NOT NULL,
    grain        text NOT NULL,
    window_start timestamptz NOT NULL,
    dimension    text NOT NULL,
    value        text NOT NULL,
    bucket       smallint NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (site, grain, window_start, dimension, value, bucket)
);

-- Exact unique visitors: the set of visitor hashes per cell, dropped after a bounded time.
CREATE TABLE trend_cell_visitors (
    site         text NOT NULL,
    grain        text NOT NULL,
    window_start timestamptz NOT NULL,
    dimension    text NOT NULL,
    value        text NOT NULL,
    visitor_hash text NOT NULL,
    PRIMARY KEY (site, grain, window_start, dimension, value, visitor_hash)
);
CREATE INDEX trend_cell_visitors_age ON trend_cell_visitors (window_start);

-- Visits dropped at the edge (DNT, GPC, under 13, opted out): a count per day, nothing else.
CREATE TABLE suppressed_visits (
    day    date NOT NULL,
    signal text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (day, signal)
);

-- Every release of trends (privacy receipt): its k, epsilon and suppressed cells.
CREATE TABLE trend_releases (
    id               uuid PRIMARY KEY,
    audience         text NOT NULL CHECK (audience IN ('operator', 'partner', 'public')),
    site             text NOT NULL,
    grain            text NOT NULL,
    from_time        timestamptz NOT NULL,
    to_time          timestamptz NOT NULL,
    k                integer NOT NULL,
    epsilon          double precision,
    windows          integer NOT NULL,
    cells_published  integer NOT NULL,
    cells_suppressed integer NOT NULL,
    released_at      timestamptz NOT NULL DEFAULT now()
);
