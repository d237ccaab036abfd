-- When the target must answer a referral, when an unanswered one was escalated to the
-- region's operator, and the video-visit link of a tele-consultation.
ALTER TABLE referrals ADD COLUMN answer_due BIGINT NOT NULL DEFAULT 0;
ALTER TABLE referrals ADD COLUMN escalated_at BIGINT;
ALTER TABLE referrals ADD COLUMN video_url TEXT;
CREATE INDEX referrals_unanswered ON referrals (status, answer_due);
