//! Store records to API shapes: times to RFC 3339 UTC, keys masked, JSON columns parsed.

use chrono::{DateTime, TimeZone, Utc};
use leasehold_core::effective_status;
use leasehold_proto as proto;
use leasehold_store as store;

pub fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

pub fn token(t: store::TokenRecord) -> proto::Token {
    proto::Token {
        id: t.id,
        name: t.name,
        role: t.role,
        created_at: time(t.created_at),
        revoked_at: opt_time(t.revoked_at),
    }
}

pub fn application(a: store::Application) -> proto::Application {
    proto::Application {
        id: a.id,
        name: a.name,
        vendor: a.vendor,
        deployment_model: a.deployment_model,
        created_at: time(a.created_at),
        updated_at: time(a.updated_at),
    }
}

pub fn license(l: store::License) -> proto::License {
    proto::License {
        effective_status: effective_status(l.status, l.expires_on, store::today()),
        policy: l.policy(),
        cost: l.cost(),
        id: l.id,
        application_id: l.application_id,
        key: None,
        key_masked: l.key_masked,
        licensed_to: l.licensed_to,
        vendor: l.vendor,
        license_type: l.license_type,
        status: l.status,
        seat_model: l.seat_model,
        seats_total: l.seats_total,
        seats_used: l.seats_used,
        version: l.version,
        purchased_on: l.purchased_on,
        expires_on: l.expires_on,
        maintenance_expires_on: l.maintenance_expires_on,
        po_number: l.po_number,
        notes: l.notes,
        created_at: time(l.created_at),
        updated_at: time(l.updated_at),
    }
}

pub fn seat(s: store::Seat) -> proto::Seat {
    proto::Seat {
        active: s.released_at.is_none(),
        instances: s
            .instances
            .as_deref()
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default(),
        id: s.id,
        license_id: s.license_id,
        kind: s.kind,
        contact_id: s.contact_id,
        contact_name: s.contact_name,
        contact_terminated: s.contact_terminated,
        assignee_name: s.assignee_name,
        device_name: s.device_name,
        seat_serial_key_masked: s.serial_key_masked,
        activated_on: s.activated_on,
        fingerprint: s.fingerprint,
        os_user: s.os_user,
        identifier: s.identifier,
        created_at: time(s.created_at),
        last_seen_at: opt_time(s.last_seen_at),
        expires_at: opt_time(s.expires_at),
        released_at: opt_time(s.released_at),
        release_reason: s.release_reason,
        reclaimed_on: s.reclaimed_on,
    }
}

pub fn contact(c: store::Contact, active_seats: Option<Vec<store::Seat>>) -> proto::Contact {
    proto::Contact {
        id: c.id,
        name: c.name,
        email: c.email,
        status: c.status,
        created_at: time(c.created_at),
        terminated_at: opt_time(c.terminated_at),
        active_seats: active_seats.map(|seats| seats.into_iter().map(seat).collect()),
    }
}

pub fn reminder(r: store::Reminder) -> proto::Reminder {
    proto::Reminder {
        id: r.id,
        license_id: r.license_id,
        kind: r.kind,
        due_on: r.due_on,
        state: r.state,
        created_at: time(r.created_at),
        sent_at: opt_time(r.sent_at),
        delivery: r.delivery,
        dismissed_at: opt_time(r.dismissed_at),
    }
}

pub fn event(e: store::Event) -> proto::Event {
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    proto::Event {
        id: e.id,
        actor: proto::EventActor {
            kind: e.actor_kind,
            id: e.actor_id,
            label: e.actor_label,
        },
        action: e.action,
        subject_type: e.subject_type,
        subject_id: e.subject_id,
        license_id: e.license_id,
        before: parse(e.before_json),
        after: parse(e.after_json),
        created_at: time(e.created_at),
    }
}

pub fn page<T, U>(page: store::Page<T>, f: impl FnMut(T) -> U) -> proto::Page<U> {
    let page = page.map(f);
    proto::Page {
        items: page.items,
        next_cursor: page.next_cursor,
    }
}

pub fn webhook(w: store::Webhook, secret: Option<String>) -> proto::Webhook {
    proto::Webhook {
        events: w.event_list(),
        id: w.id,
        url: w.url,
        secret,
        created_at: time(w.created_at),
    }
}

pub fn delivery(m: store::OutboxMessage) -> proto::Delivery {
    let body = serde_json::from_str(&crate::notify::webhook_body(&m)).unwrap_or_default();
    proto::Delivery {
        next_attempt_at: (m.state == "pending").then(|| time(m.next_attempt_at)),
        id: m.id,
        event_type: m.event_type,
        state: m.state,
        attempts: m.attempts,
        last_status: m.last_status,
        last_error: m.last_error,
        created_at: time(m.created_at),
        delivered_at: opt_time(m.delivered_at),
        body,
    }
}
