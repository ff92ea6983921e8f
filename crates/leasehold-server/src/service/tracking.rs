//! Tracking: applications, licenses, contacts and the seats assigned to them.

use super::{optional_text, required_text};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::Principal;
use crate::AppState;
use leasehold_core::{is_currency_code, keys, LeasePolicy, LicenseStatus, Permission, SeatModel};
use leasehold_proto::{AssignSeat, CreateLicense, License, Seat, UpdateLicense};
use leasehold_store::{
    LicenseChange, NewApplication, NewAssignment, NewContact, NewLicense, StoreError,
};

/// The most seats one license may have.
const MAX_SEATS: i64 = 10_000_000;

/// Checks a license's fields as they will be stored, naming the first bad field.
fn check_fields(c: &LicenseChange) -> Result<(), StoreError> {
    if c.seats_total < 1 {
        return Err(StoreError::invalid("seats_total", "must be at least 1"));
    }
    if c.seats_total > MAX_SEATS {
        return Err(StoreError::invalid(
            "seats_total",
            format!("must be at most {MAX_SEATS}"),
        ));
    }
    if let Some(cost) = &c.cost {
        if cost.amount_minor < 0 {
            return Err(StoreError::invalid(
                "cost.amount_minor",
                "must not be negative",
            ));
        }
        if !is_currency_code(&cost.currency) {
            return Err(StoreError::invalid(
                "cost.currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
    }
    if let (Some(bought), Some(expires)) = (c.purchased_on, c.expires_on) {
        if expires < bought {
            return Err(StoreError::invalid(
                "expires_on",
                "must not be before purchased_on",
            ));
        }
    }
    if let (Some(bought), Some(expires)) = (c.purchased_on, c.maintenance_expires_on) {
        if expires < bought {
            return Err(StoreError::invalid(
                "maintenance_expires_on",
                "must not be before purchased_on",
            ));
        }
    }
    c.policy
        .check()
        .map_err(|(field, message)| StoreError::invalid(field, message))
}

fn text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, StoreError> {
    optional_text(field, value, max).map_err(|e| StoreError::invalid(field, e.message))
}

/// Creates a license (the API and the console both come here).
pub(crate) async fn create_license(
    state: &AppState,
    principal: &Principal,
    body: CreateLicense,
) -> ApiResult<License> {
    principal.require(Permission::LicenseManage)?;
    let key = match body.key.as_deref() {
        Some(key) => {
            keys::normalize_key(key).map_err(|message| ApiError::invalid("key", message))?
        }
        None => crate::secrets::generate_license_key(),
    };
    let fields = LicenseChange {
        licensed_to: required_text("licensed_to", &body.licensed_to, 200)?,
        vendor: optional_text("vendor", body.vendor.as_deref(), 200)?,
        license_type: body.license_type,
        status: body.status.unwrap_or(LicenseStatus::Active),
        seat_model: body.seat_model.unwrap_or(SeatModel::Dedicated),
        seats_total: body.seats_total,
        version: optional_text("version", body.version.as_deref(), 100)?,
        cost: body.cost,
        purchased_on: body.purchased_on,
        expires_on: body.expires_on,
        maintenance_expires_on: body.maintenance_expires_on,
        po_number: optional_text("po_number", body.po_number.as_deref(), 100)?,
        notes: optional_text("notes", body.notes.as_deref(), 10_000)?,
        policy: body
            .policy
            .unwrap_or_default()
            .apply_to(LeasePolicy::default()),
    };
    check_fields(&fields)?;
    let license = NewLicense {
        application_id: body.application_id,
        key_enc: state.master.encrypt(key.as_bytes()),
        key_hash: state.master.key_hash(&key),
        key_masked: keys::mask_key(&key),
        fields,
    };
    let created = state
        .store
        .create_license(&principal.actor, &principal.workspace_id, license)
        .await?;
    let mut out = convert::license(created);
    out.key = Some(key);
    Ok(out)
}

/// Changes a license (the API and the console both come here).
pub(crate) async fn update_license(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: UpdateLicense,
) -> ApiResult<License> {
    principal.require(Permission::LicenseManage)?;
    let apply = move |current: &leasehold_store::License| -> Result<LicenseChange, StoreError> {
        let mut c = current.to_change();
        if let Some(licensed_to) = &body.licensed_to {
            c.licensed_to = required_text("licensed_to", licensed_to, 200)
                .map_err(|e| StoreError::invalid("licensed_to", e.message))?;
        }
        if let Some(vendor) = &body.vendor {
            c.vendor = text("vendor", vendor.as_deref(), 200)?;
        }
        c.license_type = body.license_type.unwrap_or(c.license_type);
        c.status = body.status.unwrap_or(c.status);
        c.seat_model = body.seat_model.unwrap_or(c.seat_model);
        c.seats_total = body.seats_total.unwrap_or(c.seats_total);
        if let Some(version) = &body.version {
            c.version = text("version", version.as_deref(), 100)?;
        }
        if let Some(cost) = &body.cost {
            c.cost = cost.clone();
        }
        c.purchased_on = body.purchased_on.unwrap_or(c.purchased_on);
        c.expires_on = body.expires_on.unwrap_or(c.expires_on);
        c.maintenance_expires_on = body
            .maintenance_expires_on
            .unwrap_or(c.maintenance_expires_on);
        if let Some(po_number) = &body.po_number {
            c.po_number = text("po_number", po_number.as_deref(), 100)?;
        }
        if let Some(notes) = &body.notes {
            c.notes = text("notes", notes.as_deref(), 10_000)?;
        }
        if let Some(policy) = &body.policy {
            c.policy = policy.apply_to(c.policy);
        }
        check_fields(&c)?;
        Ok(c)
    };
    let updated = state
        .store
        .update_license(
            &principal.actor,
            &principal.workspace_id,
            id,
            std::sync::Arc::new(apply),
        )
        .await?;
    state
        .live
        .publish(&principal.workspace_id, id, "license.updated");
    Ok(convert::license(updated))
}

/// A new application's fields, checked: the API's and the console's one rule.
pub(crate) fn new_application(
    name: &str,
    vendor: Option<&str>,
    deployment_model: leasehold_core::DeploymentModel,
) -> ApiResult<NewApplication> {
    Ok(NewApplication {
        name: required_text("name", name, 200)?,
        vendor: optional_text("vendor", vendor, 200)?,
        deployment_model,
    })
}

/// A new contact's fields, checked: the API's and the console's one rule.
pub(crate) fn new_contact(name: &str, email: Option<&str>) -> ApiResult<NewContact> {
    let email = optional_text("email", email, 254)?;
    if email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    Ok(NewContact {
        name: required_text("name", name, 200)?,
        email,
    })
}

/// Assigns a seat (the API and the console both come here).
pub(crate) async fn assign_seat(
    state: &AppState,
    principal: &Principal,
    license_id: &str,
    body: AssignSeat,
) -> ApiResult<Seat> {
    principal.require(Permission::LicenseAssign)?;
    let contact_id = optional_text("contact_id", body.contact_id.as_deref(), 100)?;
    let assignee_name = optional_text("assignee_name", body.assignee_name.as_deref(), 200)?;
    let device_name = optional_text("device_name", body.device_name.as_deref(), 200)?;
    if contact_id.is_none() && assignee_name.is_none() && device_name.is_none() {
        return Err(ApiError::invalid(
            "assignee_name",
            "name a contact_id, an assignee_name or a device_name",
        ));
    }
    let serial = match body
        .seat_serial_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        Some(key) => {
            Some(keys::normalize_key(key).map_err(|m| ApiError::invalid("seat_serial_key", m))?)
        }
        None => None,
    };
    let assignment = NewAssignment {
        contact_id,
        assignee_name,
        device_name,
        serial_key_enc: serial
            .as_deref()
            .map(|k| state.master.encrypt(k.as_bytes())),
        serial_key_masked: serial.as_deref().map(keys::mask_key),
        activated_on: body.activated_on,
    };
    let seat = state
        .store
        .assign_seat(
            &principal.actor,
            &principal.workspace_id,
            license_id,
            assignment,
        )
        .await?;
    state
        .live
        .publish(&principal.workspace_id, license_id, "seat.assigned");
    Ok(convert::seat(seat))
}

/// Reclaims a seat (the API and the console both come here).
pub(crate) async fn reclaim_seat(
    state: &AppState,
    principal: &Principal,
    seat_id: &str,
    force: bool,
) -> ApiResult<Seat> {
    principal.require(Permission::LicenseAssign)?;
    let seat = state
        .store
        .reclaim_seat(&principal.actor, &principal.workspace_id, seat_id, force)
        .await?;
    state
        .live
        .publish(&principal.workspace_id, &seat.license_id, "seat.reclaimed");
    Ok(convert::seat(seat))
}
