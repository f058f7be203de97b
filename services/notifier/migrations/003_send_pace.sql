-- The send-rate limit of each SMTP server, shared by every worker process: a token
-- bucket kept as GCRA's "theoretical arrival time" (epoch seconds). The bucket is full
-- while tat <= now; taking k slots moves tat k intervals on, and a worker may take as
-- long as tat stays within the burst of now. Workers take slots in blocks (pace.py).
CREATE TABLE smtp_send_pace (
    server text PRIMARY KEY,              -- host:port
    tat    double precision NOT NULL
);
