-- Which change the card's pending address is (random, from the card). A link confirming
-- a new address is mailed only while the contact holds the change its notice names: an
-- address that replaced it meanwhile never receives a link meant for another.
ALTER TABLE contacts ADD COLUMN pending_change uuid;
