//! Citizens' appeals: intake from every channel (once per channel id), routing to the
//! responsible organization (named, or by district and topic), deadlines from the kind of
//! appeal and the working-day calendar, one extension of a general appeal, answers returned
//! to the channel the appeal came from, escalation of overdue appeals to the ministry's
//! operator, links to the appointment or referral an appeal concerns, and the statistics
//! per district and organization. Every access to an appeal is audited.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use super::notify::Notifier;
use super::{audit_event, Caller};
use crate::config::AppealSettings;
use crate::exchange::delivery::Outcome;
use crate::model::appeal::{
    Answer, Appeal, AppealChannel, AppealEvent, AppealKind, AppealStatus, AppealTopic, Deadlines,
    WorkCalendar,
};
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
use crate::model::time::{from_ms, SharedClock};
use crate::model::{Oid, PolicyNumber, Snils};
pub use crate::store::appeals::AppealQuery;
use crate::store::appointments::AppointmentQuery;
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::referrals::ReferralQuery;
use crate::store::{Store, StoreError};

/// Outbox destination of answers going back to their channel (the item's kind names it).
pub const REPLY_DESTINATION: &str = "appeal-reply";
/// Outbox destination of the operator's notices of overdue appeals.
pub const NOTIFY_DESTINATION: &str = "appeal-notify";

/// Appeals a statistics request counts at most.
const MAX_FACTS: u32 = 1_000_000;

/// An appeal as a channel brings it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAppeal {
    /// Where it came from.
    pub channel: AppealChannel,
    /// Its id there (a repeat of it is the same appeal).
    pub external_id: String,
    /// Its kind; absent: the channel's usual kind.
    pub kind: Option<AppealKind>,
    /// The district.
    pub district: String,
    /// The organization, if the citizen named one.
    pub org: Option<Oid>,
    /// What it is about.
    pub topic: AppealTopic,
    /// The citizen's text.
    pub text: String,
    /// How to reach the citizen.
    pub contact: String,
    /// The citizen's SNILS.
    pub snils: Option<Snils>,
    /// The citizen's policy number.
    pub policy: Option<PolicyNumber>,
    /// When the channel received it (epoch ms); absent: now.
    pub received_at: Option<i64>,
}

/// Why an appeal request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppealError {
    /// No such appeal, or not the caller's.
    #[error("no such appeal")]
    NotFound,
    /// A field is missing or wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (the service's name; the edge maps it).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The caller does not act for the organization.
    #[error("the client does not act for organization {0}")]
    NotYourOrganization(String),
    /// Answered already (or not routed yet): nothing may change.
    #[error("the appeal is {0}: {1}")]
    Conflict(AppealStatus, &'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppealError {
    /// Its code in refusals and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            AppealError::NotFound => "APPEAL_NOT_FOUND",
            AppealError::Invalid { .. } => "INVALID_APPEAL",
            AppealError::NotYourOrganization(_) => "NOT_YOUR_ORGANIZATION",
            AppealError::Conflict(..) => "APPEAL_STATE",
            AppealError::Store(_) => "STORAGE",
        }
    }
}

/// How statistics are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Per district.
    District,
    /// Per organization.
    Organization,
}

/// One row of the appeal statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// The district or the organization (empty: not routed).
    pub key: String,
    /// Appeals received in the period.
    pub appeals: u64,
    /// Of those, answered.
    pub answered: u64,
    /// Of those, answered by their deadline.
    pub answered_on_time: u64,
    /// Answered / appeals.
    pub share_answered: f64,
    /// Answered on time / appeals.
    pub share_on_time: f64,
    /// Median minutes from receipt to answer (answered ones).
    pub median_minutes_to_answer: Option<u64>,
    /// Appeals by topic.
    pub by_topic: BTreeMap<String, u64>,
}

/// A district's (and topic's) organization.
#[derive(Debug, Clone)]
struct Route {
    district: String,
    topic: Option<AppealTopic>,
    org: Oid,
}

/// The appeals service.
#[derive(Clone)]
pub struct Appeals {
    store: Store,
    deadlines: Deadlines,
    calendar: Arc<WorkCalendar>,
    routes: Arc<[Route]>,
    replies: Arc<HashMap<AppealChannel, Arc<dyn Notifier>>>,
    operator: Option<Arc<dyn Notifier>>,
    retries: Arc<[u64]>,
    clock: SharedClock,
    wake: Arc<Notify>,
}

impl Appeals {
    /// The service over `store` as `settings` say, counting days in `time_zone`; answers go
    /// back through `replies` (by channel), overdue appeals to `operator`. The error names
    /// the setting at fault.
    pub fn new(
        store: Store,
        settings: &AppealSettings,
        time_zone: chrono_tz::Tz,
        replies: HashMap<AppealChannel, Arc<dyn Notifier>>,
        operator: Option<Arc<dyn Notifier>>,
        clock: SharedClock,
    ) -> Result<Appeals, (String, String)> {
        let routes = settings
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = |k: &str| format!("appeals.routes[{i}].{k}");
                Ok(Route {
                    district: r.district.trim().to_string(),
                    topic: r
                        .topic
                        .as_deref()
                        .map(|t| {
                            AppealTopic::parse(t)
                                .ok_or_else(|| (at("topic"), format!("unknown topic {t:?}")))
                        })
                        .transpose()?,
                    org: Oid::parse_organization(&r.org).map_err(|e| (at("org"), e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, (String, String)>>()?;
        for channel in settings.reply_urls.keys() {
            if AppealChannel::parse(channel).is_none() {
                return Err((
                    format!("appeals.reply_urls.{channel}"),
                    "not a channel (portal-complaint, district-chat, phone, in-person)".into(),
                ));
            }
        }
        Ok(Appeals {
            store,
            deadlines: Deadlines {
                refusal_working_days: settings.refusal_working_days,
                complaint_working_days: settings.complaint_working_days,
                general_days: settings.general_days,
                extension_days: settings.extension_days,
                chat_minutes: settings.chat_minutes,
            },
            calendar: Arc::new(WorkCalendar {
                holidays: settings.holidays.iter().copied().collect(),
                working_weekends: settings.working_weekends.iter().copied().collect(),
                time_zone,
            }),
            routes: routes.into(),
            replies: Arc::new(replies),
            operator,
            retries: settings.retry_schedule_secs.clone().into(),
            clock,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Woken when an answer or a notice is queued.
    pub fn queued(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// True when overdue appeals are told to an operator.
    pub fn notifies(&self) -> bool {
        self.operator.is_some()
    }

    fn audit(&self, caller: Caller<'_>, action: AuditAction, a: Option<&Appeal>) -> AuditEvent {
        let mut e = audit_event(caller, action, AuditEntity::Appeal, self.clock.now_ms());
        if let Some(a) = a {
            e.entity_id = Some(a.id.clone());
            e.org = a.org.clone();
            e.snils = a.snils.clone();
            e.policy = a.policy.clone();
        }
        e
    }

    fn event(
        &self,
        a: &Appeal,
        action: &str,
        org: Option<&Oid>,
        detail: String,
        by: &str,
    ) -> AppealEvent {
        AppealEvent {
            id: uuid::Uuid::now_v7().to_string(),
            appeal_id: a.id.clone(),
            at: self.clock.now_ms(),
            action: action.into(),
            org: org.map(Oid::to_string),
            detail,
            client_id: by.into(),
        }
    }

    /// The organization that answers an appeal of `district` about `topic`: the route of
    /// that topic, else the district's route for every topic.
    fn route(&self, district: &str, topic: AppealTopic) -> Option<&Oid> {
        let of = |t: Option<AppealTopic>| {
            self.routes
                .iter()
                .find(|r| r.district == district && r.topic == t)
                .map(|r| &r.org)
        };
        of(Some(topic)).or_else(|| of(None))
    }

    /// Takes in an appeal (see [`Appeals::submit_inner`]); audited.
    pub async fn submit(
        &self,
        caller: Caller<'_>,
        new: NewAppeal,
    ) -> Result<(Appeal, bool), AppealError> {
        let r = self.submit_inner(caller, new).await;
        self.settle(caller, AuditAction::Create, r, |(a, _)| a)
            .await
    }

    /// The caller's appeal and its history; audited (a refusal too).
    pub async fn get(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<(Appeal, Vec<AppealEvent>), AppealError> {
        let r = self.get_inner(caller, id).await;
        self.settle(caller, AuditAction::Read, r, |(a, _)| a).await
    }

    /// The responsible organization's answer (see [`Appeals::answer_inner`]); audited.
    pub async fn answer(
        &self,
        caller: Caller<'_>,
        id: &str,
        text: &str,
    ) -> Result<Appeal, AppealError> {
        let r = self.answer_inner(caller, id, text).await;
        self.settle(caller, AuditAction::Update, r, |a| a).await
    }

    /// Hands an appeal on (see [`Appeals::reroute_inner`]); audited.
    pub async fn reroute(
        &self,
        caller: Caller<'_>,
        id: &str,
        to: &Oid,
        reason: &str,
    ) -> Result<Appeal, AppealError> {
        let r = self.reroute_inner(caller, id, to, reason).await;
        self.settle(caller, AuditAction::Update, r, |a| a).await
    }

    /// Extends a general appeal once (see [`Appeals::extend_inner`]); audited.
    pub async fn extend(
        &self,
        caller: Caller<'_>,
        id: &str,
        reason: &str,
    ) -> Result<Appeal, AppealError> {
        let r = self.extend_inner(caller, id, reason).await;
        self.settle(caller, AuditAction::Update, r, |a| a).await
    }

    /// Records the access: the appeal and its citizen when it succeeded, the refusal's code
    /// when refused (storage failures are not accesses).
    async fn settle<T>(
        &self,
        caller: Caller<'_>,
        action: AuditAction,
        result: Result<T, AppealError>,
        appeal: impl FnOnce(&T) -> &Appeal,
    ) -> Result<T, AppealError> {
        let event = match &result {
            Ok(v) => Some(self.audit(caller, action, Some(appeal(v)))),
            Err(AppealError::Store(_)) => None,
            Err(e) => Some(self.audit(caller, action, None).refused(e.code())),
        };
        if let Some(e) = event {
            self.store.insert_audit(&e).await?;
        }
        result
    }

    /// Takes in an appeal: its deadline from its kind, routed to the organization it names
    /// or its district's (else left to the operator), linked to the citizen's appointment or
    /// referral it is about. A repeat of a channel id answers the stored appeal (`false`).
    async fn submit_inner(
        &self,
        caller: Caller<'_>,
        new: NewAppeal,
    ) -> Result<(Appeal, bool), AppealError> {
        let now = self.clock.now_ms();
        let invalid = |field, message: &str| AppealError::Invalid {
            field,
            message: message.into(),
        };
        if new.external_id.trim().is_empty() {
            return Err(invalid(
                "identifier",
                "the appeal's id in its channel is required",
            ));
        }
        if new.district.trim().is_empty() {
            return Err(invalid("district", "the district is required"));
        }
        if new.text.trim().is_empty() {
            return Err(invalid("text", "the appeal's text is required"));
        }
        if new.contact.trim().is_empty() {
            return Err(invalid("contact", "a way to reach the citizen is required"));
        }
        for (field, value, max) in [
            ("identifier", &new.external_id, 200),
            ("district", &new.district, 200),
            ("text", &new.text, 20_000),
            ("contact", &new.contact, 500),
        ] {
            if value.chars().count() > max {
                return Err(invalid(field, &format!("longer than {max} characters")));
            }
        }
        let received_at = new.received_at.unwrap_or(now);
        if received_at > now + 300_000 {
            return Err(invalid("sent", "in the future"));
        }
        let kind = new.kind.unwrap_or(AppealKind::default_for(new.channel));
        let district = new.district.trim().to_string();
        let org = new
            .org
            .clone()
            .or_else(|| self.route(&district, new.topic).cloned());
        let mut appeal = Appeal {
            id: uuid::Uuid::now_v7().to_string(),
            channel: new.channel,
            external_id: new.external_id.trim().to_string(),
            kind,
            district,
            org: org.clone(),
            topic: new.topic,
            text: new.text,
            contact: new.contact.trim().to_string(),
            snils: new.snils,
            policy: new.policy,
            status: if org.is_some() {
                AppealStatus::Open
            } else {
                AppealStatus::Unrouted
            },
            received_at,
            due_at: self.deadlines.due(kind, received_at, &self.calendar),
            extension: None,
            escalated_at: None,
            answer: None,
            linked: None,
            client_id: caller.client_id.to_string(),
            updated_at: now,
        };
        appeal.linked = self.concerns(&appeal).await?;
        let mut events = vec![self.event(
            &appeal,
            "received",
            None,
            format!(
                "{} via {}, due {}",
                kind,
                appeal.channel,
                from_ms(appeal.due_at).to_rfc3339()
            ),
            caller.client_id,
        )];
        if let Some(org) = &org {
            let how = if new.org.is_some() {
                "named by the citizen".to_string()
            } else {
                format!(
                    "the organization of district {} for {}",
                    appeal.district, appeal.topic
                )
            };
            events.push(self.event(&appeal, "routed", Some(org), how, "gateway"));
        }
        Ok(self.store.insert_appeal(&appeal, &events, &[]).await?)
    }

    /// The appointment (booking topics) or referral (routing) of the citizen the appeal is
    /// about: the latest one whose patient's identifiers match.
    async fn concerns(&self, a: &Appeal) -> Result<Option<(String, String)>, StoreError> {
        if a.snils.is_none() && a.policy.is_none() {
            return Ok(None);
        }
        // Either identifier matches: a record may carry only one of them.
        let mut either = Vec::new();
        if let Some(p) = &a.policy {
            either.push((Some(p.clone()), None));
        }
        if let Some(s) = &a.snils {
            either.push((None, Some(s.clone())));
        }
        let mut found: Vec<(i64, String)> = Vec::new();
        let kind = match a.topic {
            AppealTopic::Booking | AppealTopic::Queues => {
                for (policy, snils) in either {
                    let q = AppointmentQuery {
                        policy,
                        snils,
                        ..AppointmentQuery::default()
                    };
                    let hits = self.store.search_appointments(&q, 50).await?;
                    found.extend(hits.into_iter().map(|x| (x.created_at, x.id)));
                }
                "appointment"
            }
            AppealTopic::Routing => {
                for (patient_policy, patient_snils) in either {
                    let q = ReferralQuery {
                        patient_policy,
                        patient_snils,
                        ..ReferralQuery::default()
                    };
                    let hits = self.store.list_referrals(&q, 50).await?;
                    found.extend(hits.into_iter().map(|x| (x.created_at, x.id)));
                }
                "referral"
            }
            _ => return Ok(None),
        };
        Ok(found
            .into_iter()
            .max()
            .map(|(_, id)| (kind.to_string(), id)))
    }

    /// The caller's appeal and what happened to it; another organization's (or an
    /// unrouted one, for anyone but an operator) is not found.
    async fn get_inner(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<(Appeal, Vec<crate::model::appeal::AppealEvent>), AppealError> {
        let a = self.owned(caller, id).await?;
        let events = self.store.appeal_events(id).await?;
        Ok((a, events))
    }

    async fn owned(&self, caller: Caller<'_>, id: &str) -> Result<Appeal, AppealError> {
        let a = self.store.appeal(id).await?.ok_or(AppealError::NotFound)?;
        let visible = caller.operator || a.org.as_ref().is_some_and(|o| caller.acts_for(o));
        if visible {
            Ok(a)
        } else {
            Err(AppealError::NotFound)
        }
    }

    /// The caller's appeals matching `q` (an operator's: every appeal), newest first; an
    /// organization filter narrows the caller's organizations, never widens them.
    pub async fn search(
        &self,
        caller: Caller<'_>,
        mut q: AppealQuery,
        limit: u32,
    ) -> Result<Vec<Appeal>, AppealError> {
        if !caller.operator {
            q.orgs = Some(match q.orgs.take() {
                Some(asked) => asked.into_iter().filter(|o| caller.acts_for(o)).collect(),
                None => caller.organizations.to_vec(),
            });
        }
        let found = self.store.search_appeals(&q, limit).await?;
        self.store
            .insert_audit(&self.audit(caller, AuditAction::Search, None))
            .await?;
        Ok(found)
    }

    /// The responsible organization answers: the appeal closes and the answer is queued to
    /// go back to the channel it came from.
    async fn answer_inner(
        &self,
        caller: Caller<'_>,
        id: &str,
        text: &str,
    ) -> Result<Appeal, AppealError> {
        let a = self.owned(caller, id).await?;
        if text.trim().is_empty() {
            return Err(AppealError::Invalid {
                field: "answer",
                message: "the answer's text is required".into(),
            });
        }
        if text.chars().count() > 20_000 {
            return Err(AppealError::Invalid {
                field: "answer",
                message: "longer than 20000 characters".into(),
            });
        }
        match a.status {
            AppealStatus::Answered => {
                return Err(AppealError::Conflict(a.status, "it was answered before"))
            }
            AppealStatus::Unrouted => {
                return Err(AppealError::Conflict(
                    a.status,
                    "route it to an organization first",
                ))
            }
            AppealStatus::Open => {}
        }
        let answer = Answer {
            at: self.clock.now_ms(),
            text: text.trim().to_string(),
            by: caller.client_id.to_string(),
        };
        let on_time = answer.at <= a.due_at;
        let event = self.event(
            &a,
            "answered",
            a.org.as_ref(),
            if on_time {
                "on time"
            } else {
                "after its deadline"
            }
            .into(),
            caller.client_id,
        );
        let reply = NewOutboxItem {
            destination: REPLY_DESTINATION.into(),
            kind: a.channel.as_str().into(),
            aggregate_id: a.id.clone(),
            payload: json!({
                "appeal": a.id,
                "channel": a.channel.as_str(),
                "externalId": a.external_id,
                "organization": a.org.as_ref().map(Oid::as_str),
                "answer": answer.text,
                "answeredAt": from_ms(answer.at).to_rfc3339(),
                "onTime": on_time,
            })
            .to_string(),
            due_at: answer.at,
            attempts: 0,
            ordering_key: Some(format!("appeal:{}", a.id)),
        };
        if !self
            .store
            .answer_appeal(&a.id, &answer, &event, &reply)
            .await?
        {
            return Err(AppealError::Conflict(
                AppealStatus::Answered,
                "it was answered meanwhile",
            ));
        }
        self.wake.notify_one();
        Ok(self.store.appeal(id).await?.unwrap_or(a))
    }

    /// Hands an appeal to another organization (the operator routing an unrouted one, or
    /// the responsible organization passing on what is not its own), with the reason.
    async fn reroute_inner(
        &self,
        caller: Caller<'_>,
        id: &str,
        to: &Oid,
        reason: &str,
    ) -> Result<Appeal, AppealError> {
        let a = self.owned(caller, id).await?;
        if reason.trim().is_empty() {
            return Err(AppealError::Invalid {
                field: "reason",
                message: "the reason for rerouting is required".into(),
            });
        }
        if a.status == AppealStatus::Answered {
            return Err(AppealError::Conflict(a.status, "it was answered"));
        }
        if a.org.as_ref() == Some(to) {
            return Err(AppealError::Invalid {
                field: "organization",
                message: "the appeal is with this organization already".into(),
            });
        }
        let action = if a.org.is_some() {
            "rerouted"
        } else {
            "routed"
        };
        let detail = format!(
            "from {}: {}",
            a.org.as_ref().map_or("nobody", Oid::as_str),
            reason.trim()
        );
        let event = self.event(&a, action, Some(to), detail, caller.client_id);
        if !self.store.route_appeal(&a.id, to, &event).await? {
            return Err(AppealError::Conflict(
                AppealStatus::Answered,
                "it was answered meanwhile",
            ));
        }
        Ok(self.store.appeal(id).await?.unwrap_or(a))
    }

    /// Extends a general appeal's deadline once, with the reason.
    async fn extend_inner(
        &self,
        caller: Caller<'_>,
        id: &str,
        reason: &str,
    ) -> Result<Appeal, AppealError> {
        let a = self.owned(caller, id).await?;
        if reason.trim().is_empty() {
            return Err(AppealError::Invalid {
                field: "reason",
                message: "the reason for the extension is required".into(),
            });
        }
        if a.kind != AppealKind::General {
            return Err(AppealError::Invalid {
                field: "kind",
                message: format!("a {} appeal cannot be extended; only a general one", a.kind),
            });
        }
        if a.status == AppealStatus::Answered {
            return Err(AppealError::Conflict(a.status, "it was answered"));
        }
        if a.extension.is_some() {
            return Err(AppealError::Conflict(
                a.status,
                "it was extended before (once only)",
            ));
        }
        let due = self.deadlines.extended(a.due_at);
        let event = self.event(
            &a,
            "extended",
            a.org.as_ref(),
            format!("to {}: {}", from_ms(due).to_rfc3339(), reason.trim()),
            caller.client_id,
        );
        if !self
            .store
            .extend_appeal(&a.id, due, reason.trim(), &event)
            .await?
        {
            return Err(AppealError::Conflict(a.status, "it changed meanwhile"));
        }
        Ok(self.store.appeal(id).await?.unwrap_or(a))
    }

    /// One step of the deadline job: overdue appeals not yet escalated go to the ministry's
    /// operator (once each); returns how many.
    pub async fn escalate_overdue(&self, limit: u32) -> Result<u64, AppealError> {
        let now = self.clock.now_ms();
        let mut n = 0;
        for a in self.store.overdue_appeals(now, limit).await? {
            let event = self.event(
                &a,
                "escalated",
                a.org.as_ref(),
                format!(
                    "not answered by {}: escalated to the ministry's operator",
                    from_ms(a.due_at).to_rfc3339()
                ),
                "gateway",
            );
            // No personal data in the notice: the operator opens the appeal to see it.
            let notice = self.operator.as_ref().map(|_| NewOutboxItem {
                destination: NOTIFY_DESTINATION.into(),
                kind: "appeal-overdue".into(),
                aggregate_id: a.id.clone(),
                payload: json!({
                    "appeal": a.id,
                    "kind": a.kind.as_str(),
                    "channel": a.channel.as_str(),
                    "district": a.district,
                    "organization": a.org.as_ref().map(Oid::as_str),
                    "topic": a.topic.as_str(),
                    "received": from_ms(a.received_at).to_rfc3339(),
                    "due": from_ms(a.due_at).to_rfc3339(),
                })
                .to_string(),
                due_at: now,
                attempts: 0,
                ordering_key: None,
            });
            if self
                .store
                .escalate_appeal(&a.id, &event, notice.as_ref())
                .await?
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// Delivers one answer to the channel its appeal came from.
    pub async fn deliver_reply(&self, item: OutboxItem) -> Outcome {
        let now = self.clock.now_ms();
        let Some(channel) = AppealChannel::parse(&item.kind) else {
            return Outcome::Dead(format!("unknown channel {:?}", item.kind));
        };
        match self.replies.get(&channel) {
            Some(n) => super::notify::deliver(Some(n.as_ref()), &item, &self.retries, now).await,
            None => Outcome::Dead(format!(
                "no endpoint for answers to the {channel} channel (appeals.reply_urls.{channel})"
            )),
        }
    }

    /// Delivers one notice of an overdue appeal to the operator.
    pub async fn deliver_notice(&self, item: OutboxItem) -> Outcome {
        super::notify::deliver(
            self.operator.as_deref(),
            &item,
            &self.retries,
            self.clock.now_ms(),
        )
        .await
    }

    /// The statistics of appeals received in `[from, to)` (the caller's organizations'
    /// unless an operator), grouped `by`, ordered by the share answered (highest first).
    pub async fn statistics(
        &self,
        caller: Caller<'_>,
        from: i64,
        to: i64,
        by: GroupBy,
    ) -> Result<Vec<StatsRow>, AppealError> {
        let orgs = (!caller.operator).then_some(caller.organizations);
        let facts = self.store.appeal_facts(from, to, orgs, MAX_FACTS).await?;
        let mut groups: BTreeMap<String, Vec<&crate::store::appeals::AppealFacts>> =
            BTreeMap::new();
        for f in &facts {
            let key = match by {
                GroupBy::District => f.district.clone(),
                GroupBy::Organization => f.org.clone(),
            };
            groups.entry(key).or_default().push(f);
        }
        let mut rows: Vec<StatsRow> = groups
            .into_iter()
            .map(|(key, fs)| {
                let appeals = fs.len() as u64;
                let mut minutes: Vec<u64> = fs
                    .iter()
                    .filter_map(|f| {
                        f.answered_at
                            .map(|a| ((a - f.received_at).max(0) / 60_000) as u64)
                    })
                    .collect();
                minutes.sort_unstable();
                let answered = minutes.len() as u64;
                let on_time = fs
                    .iter()
                    .filter(|f| f.answered_at.is_some_and(|a| a <= f.due_at))
                    .count() as u64;
                let mut by_topic = BTreeMap::new();
                for f in &fs {
                    *by_topic.entry(f.topic.as_str().to_string()).or_insert(0) += 1;
                }
                StatsRow {
                    key,
                    appeals,
                    answered,
                    answered_on_time: on_time,
                    share_answered: ratio(answered, appeals),
                    share_on_time: ratio(on_time, appeals),
                    median_minutes_to_answer: median(&minutes),
                    by_topic,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.share_answered
                .total_cmp(&a.share_answered)
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(rows)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // Three decimals: the published tables show percentages with one.
        (part as f64 / whole as f64 * 1000.0).round() / 1000.0
    }
}

/// The median of sorted values (the lower middle for an even count: whole minutes).
fn median(sorted: &[u64]) -> Option<u64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// The statistics as CSV: one line per row, topics in their fixed order.
pub fn stats_csv(rows: &[StatsRow], by: GroupBy) -> String {
    let mut out = String::new();
    out.push_str(match by {
        GroupBy::District => "district",
        GroupBy::Organization => "organization",
    });
    out.push_str(
        ",appeals,answered,answered_on_time,share_answered,share_on_time,median_minutes_to_answer",
    );
    for t in AppealTopic::ALL {
        out.push_str(&format!(",topic_{}", t.as_str()));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&csv_field(&r.key));
        out.push_str(&format!(
            ",{},{},{},{:.3},{:.3},{}",
            r.appeals,
            r.answered,
            r.answered_on_time,
            r.share_answered,
            r.share_on_time,
            r.median_minutes_to_answer
                .map(|m| m.to_string())
                .unwrap_or_default()
        ));
        for t in AppealTopic::ALL {
            out.push_str(&format!(
                ",{}",
                r.by_topic.get(t.as_str()).copied().unwrap_or(0)
            ));
        }
        out.push('\n');
    }
    out
}

/// A CSV field, quoted when it must be; a leading formula character is neutralised so a
/// spreadsheet does not run it.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_csv() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[1, 3, 10]), Some(3));
        assert_eq!(median(&[1, 3, 5, 10]), Some(4));
        assert_eq!(csv_field("Северный, 2"), "\"Северный, 2\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        let rows = vec![StatsRow {
            key: "North".into(),
            appeals: 4,
            answered: 3,
            answered_on_time: 2,
            share_answered: 0.75,
            share_on_time: 0.5,
            median_minutes_to_answer: Some(90),
            by_topic: [("booking".to_string(), 3), ("other".to_string(), 1)].into(),
        }];
        let csv = stats_csv(&rows, GroupBy::District);
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("district,appeals,answered,"));
        assert_eq!(
            lines.next().unwrap(),
            "North,4,3,2,0.750,0.500,90,3,0,0,0,0,0,0,0,1"
        );
    }
}
