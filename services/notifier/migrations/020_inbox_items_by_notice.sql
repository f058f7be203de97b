-- A notice's inbox items (the email planner's walk, its inbox outcomes, policy notices)
-- by a btree: the BRIN index of 002 serves only while each block range holds one
-- notice's rows, and notice ids are random UUIDs, so the ranges of blocks shared by
-- small notices (a reply, a late card's items) span nearly every id and the lookup
-- becomes a scan of the table. (notice_id, id) also gives the planner its order, and
-- costs a breach fan-out little: its rows share one notice id, with rising ids, so they
-- go in one place of the index, not each at a random place (the cost 002 avoided).
CREATE INDEX inbox_items_notice_id ON inbox_items (notice_id, id);
DROP INDEX inbox_items_notice;
