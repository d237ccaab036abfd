-- Federation of regional gateways: a referral remembers the peer gateway it came from and
-- the one it was forwarded to (the same id in every gateway), the kinds of its documents
-- (a forwarded referral's documents stay in the region that registered them), and a
-- conclusion that came back from a peer. Transaction records carry their W3C trace id.
ALTER TABLE referrals ADD COLUMN document_kinds TEXT NOT NULL DEFAULT '';
ALTER TABLE referrals ADD COLUMN origin_peer TEXT;
ALTER TABLE referrals ADD COLUMN peer TEXT;
ALTER TABLE referrals ADD COLUMN forwarded_at BIGINT;
ALTER TABLE referrals ADD COLUMN conclusion TEXT;
-- An effect is delivered in the trace of the request that queued it.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE transactions ADD COLUMN trace_id TEXT COLLATE "C";
CREATE INDEX transactions_trace ON transactions (trace_id) WHERE trace_id IS NOT NULL;
