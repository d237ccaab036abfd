-- What a rerun of a recorded inbound exchange must send again besides its body: the
-- request's Content-Type and SOAPAction. Reruns are found by the record they re-ran.
ALTER TABLE transactions ADD COLUMN content_type TEXT;
ALTER TABLE transactions ADD COLUMN soap_action TEXT;
CREATE INDEX transactions_rerun_of ON transactions (rerun_of) WHERE rerun_of IS NOT NULL;
