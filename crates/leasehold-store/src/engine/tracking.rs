//! What IT admins track: applications, licenses, assigned seats, contacts, reminders
//! and the audit log.

use super::*;

#[async_trait]
impl Tracking for This {
    async fn create_application(
        &self,
        actor: &Actor,
        workspace_id: &str,
        application: NewApplication,
    ) -> Result<Application> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let created = sqlx::query_as::<_, Application>(
            "INSERT INTO applications (id, workspace_id, name, vendor, deployment_model, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             RETURNING id, workspace_id, name, vendor, deployment_model, created_at, updated_at",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(&application.name)
        .bind(&application.vendor)
        .bind(application.deployment_model)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "application.created",
            ("application", &created.id),
            None,
            None,
            json(&created),
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn application(&self, workspace_id: &str, id: &str) -> Result<Application> {
        self.one_in(
            "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
             FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            workspace_id,
            id,
        )
        .await
    }

    async fn list_applications(
        &self,
        workspace_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Application>> {
        self.page_in("SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
             FROM applications WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2 = '' OR id < $2) \
             ORDER BY id DESC LIMIT $3", workspace_id, page, |r: &Application| &r.id)
            .await
    }

    async fn update_application(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: ApplicationChange,
    ) -> Result<Application> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query_as::<_, Application>(concat!(
            "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
             FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            row_lock!()
        ))
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let after = Application {
            name: change.name.unwrap_or_else(|| before.name.clone()),
            vendor: change.vendor.unwrap_or_else(|| before.vendor.clone()),
            deployment_model: change.deployment_model.unwrap_or(before.deployment_model),
            updated_at: now_ms(),
            ..before.clone()
        };
        sqlx::query(
            "UPDATE applications SET name = $1, vendor = $2, deployment_model = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(&after.name)
        .bind(&after.vendor)
        .bind(after.deployment_model)
        .bind(after.updated_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "application.updated",
            ("application", id),
            None,
            json(&before),
            json(&after),
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    async fn delete_application(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query_as::<_, Application>(concat!(
            "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
             FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            row_lock!()
        ))
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (licenses,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM licenses WHERE application_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if licenses > 0 {
            return Err(StoreError::Conflict(format!(
                "the application has {licenses} license(s); delete them first"
            )));
        }
        sqlx::query("UPDATE applications SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "application.deleted",
            ("application", id),
            None,
            json(&before),
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn create_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        license: NewLicense,
    ) -> Result<License> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let application: Option<(String,)> = sqlx::query_as(concat!(
            "SELECT id FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            row_lock!()
        ))
        .bind(&license.application_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        if application.is_none() {
            return Err(StoreError::invalid("application_id", "no such application"));
        }
        let f = &license.fields;
        let created =
            Self::bind_license_fields(sqlx::query_as::<_, License>(crate::sql::INSERT_LICENSE), f)
                .bind(new_id())
                .bind(workspace_id)
                .bind(&license.application_id)
                .bind(&license.key_enc)
                .bind(&license.key_hash)
                .bind(&license.key_masked)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict("a license with this key exists already".into())
                    } else {
                        e.into()
                    }
                })?;
        Self::sync_reminders(&mut tx, &created).await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "license.created",
            ("license", &created.id),
            Some(&created.id),
            None,
            json(&created),
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn license(&self, workspace_id: &str, id: &str) -> Result<License> {
        self.one_in(license_select!(), workspace_id, id).await
    }

    async fn list_licenses(
        &self,
        workspace_id: &str,
        filter: &LicenseFilter,
        page: &PageRequest,
    ) -> Result<Page<License>> {
        let rows = sqlx::query_as::<_, License>(
            "SELECT * FROM licenses WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2 = '' OR id < $2) \
             AND ($3 = '' OR application_id = $3) AND ($4 = '' OR status = $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(workspace_id)
        .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
        .bind(filter.application_id.as_deref().unwrap_or(""))
        .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(self.reader())
        .await?;
        Ok(Page::from_fetched(rows, page, |l| l.id.clone()))
    }

    async fn update_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: crate::LicenseEdit,
    ) -> Result<License> {
        self.edit_license(actor, workspace_id, id, change).await
    }

    async fn delete_license(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()> {
        self.remove_license(actor, workspace_id, id).await
    }

    async fn reveal_license_key(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Vec<u8>> {
        let mut tx = self.begin_write().await?;
        let license = Self::license_in(&mut tx, workspace_id, id).await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "license.key_revealed",
            ("license", id),
            Some(id),
            None,
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(license.key_enc)
    }

    // Seats change: the store's own writer (sqlite/admin.rs, postgres/admin.rs).
    async fn assign_seat(
        &self,
        actor: &Actor,
        workspace_id: &str,
        license_id: &str,
        assignment: NewAssignment,
    ) -> Result<Seat> {
        self.assign(actor, workspace_id, license_id, assignment)
            .await
    }

    async fn list_seats(
        &self,
        workspace_id: &str,
        license_id: &str,
        active_only: bool,
        page: &PageRequest,
    ) -> Result<Page<Seat>> {
        self.license(workspace_id, license_id).await?;
        let rows = sqlx::query_as::<_, Seat>(concat!(
            seat_select!(),
            "WHERE s.license_id = $1 AND s.workspace_id = $2 AND ($3 = '' OR s.id < $3) \
             AND ($4 = FALSE OR s.released_at IS NULL) ORDER BY s.id DESC LIMIT $5"
        ))
        .bind(license_id)
        .bind(workspace_id)
        .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
        .bind(active_only)
        .bind(page.fetch_limit())
        .fetch_all(self.reader())
        .await?;
        Ok(Page::from_fetched(rows, page, |s| s.id.clone()))
    }

    async fn reclaim_seat(
        &self,
        actor: &Actor,
        workspace_id: &str,
        seat_id: &str,
        force: bool,
    ) -> Result<Seat> {
        self.reclaim(actor, workspace_id, seat_id, force).await
    }

    async fn machine_seat(&self, license_id: &str, alias: &str) -> Result<Option<Seat>> {
        Ok(sqlx::query_as::<_, Seat>(concat!(
            seat_select!(),
            "WHERE s.license_id = $1 AND s.released_at IS NULL AND s.kind <> 'assignment' \
             AND (s.id = $2 OR (s.fingerprint = $2 AND (s.kind = 'activation' OR s.os_user = ''))) \
             ORDER BY CASE WHEN s.id = $2 THEN 0 ELSE 1 END, s.expires_at DESC LIMIT 1"
        ))
        .bind(license_id)
        .bind(alias)
        .fetch_optional(self.reader())
        .await?)
    }

    async fn create_contact(
        &self,
        actor: &Actor,
        workspace_id: &str,
        contact: NewContact,
    ) -> Result<Contact> {
        let mut tx = self.begin_write().await?;
        let created = sqlx::query_as::<_, Contact>(
            "INSERT INTO contacts (id, workspace_id, name, email, status, created_at) \
             VALUES ($1, $2, $3, $4, 'active', $5) RETURNING *",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(&contact.name)
        .bind(&contact.email)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "contact.created",
            ("contact", &created.id),
            None,
            None,
            json(&created),
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn contact(&self, workspace_id: &str, id: &str) -> Result<Contact> {
        self.one_in(
            "SELECT * FROM contacts WHERE id = $1 AND workspace_id = $2",
            workspace_id,
            id,
        )
        .await
    }

    async fn list_contacts(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Contact>> {
        self.page_in("SELECT * FROM contacts WHERE workspace_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3", workspace_id, page, |r: &Contact| &r.id)
            .await
    }

    async fn terminate_contact(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Contact> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query_as::<_, Contact>(
            "SELECT * FROM contacts WHERE id = $1 AND workspace_id = $2",
        )
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let after = sqlx::query_as::<_, Contact>(
            "UPDATE contacts SET status = 'terminated', terminated_at = COALESCE(terminated_at, $1) \
             WHERE id = $2 RETURNING *",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "contact.terminated",
            ("contact", id),
            None,
            json(&before),
            json(&after),
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    async fn contact_seats(&self, workspace_id: &str, contact_id: &str) -> Result<Vec<Seat>> {
        self.contact(workspace_id, contact_id).await?;
        Ok(sqlx::query_as::<_, Seat>(concat!(
            seat_select!(),
            "WHERE s.contact_id = $1 AND s.workspace_id = $2 AND s.released_at IS NULL ORDER BY s.id DESC"
        ))
        .bind(contact_id)
        .bind(workspace_id)
        .fetch_all(self.reader())
        .await?)
    }

    async fn list_reminders(
        &self,
        workspace_id: &str,
        filter: &ReminderFilter,
        page: &PageRequest,
    ) -> Result<Page<Reminder>> {
        let (after_day, after_id) = match page.cursor.as_deref().and_then(|c| c.split_once('|')) {
            Some((day, id)) => (
                chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                    .map_err(|_| StoreError::invalid("cursor", "not a cursor of this list"))?,
                id.to_string(),
            ),
            None if page.cursor.is_some() => {
                return Err(StoreError::invalid("cursor", "not a cursor of this list"))
            }
            None => (crate::sql::first_day(), String::new()),
        };
        let rows = sqlx::query_as::<_, Reminder>(
            "SELECT r.*, o.state AS delivery FROM reminders r JOIN licenses l ON l.id = r.license_id \
             LEFT JOIN outbox o ON o.id = r.outbox_id WHERE r.workspace_id = $1 AND l.deleted_at IS NULL \
             AND (r.due_on > $2 OR (r.due_on = $2 AND r.id > $3)) \
             AND ($4 = '' OR r.license_id = $4) AND r.due_on <= $5 AND ($6 = '' OR r.state = $6) \
             ORDER BY r.due_on, r.id LIMIT $7",
        )
        .bind(workspace_id)
        .bind(after_day)
        .bind(after_id)
        .bind(filter.license_id.as_deref().unwrap_or(""))
        .bind(filter.due_before.unwrap_or(crate::sql::last_day()))
        .bind(filter.state.map(|s| s.as_str()).unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(self.reader())
        .await?;
        Ok(Page::from_fetched(rows, page, |r| {
            format!("{}|{}", r.due_on, r.id)
        }))
    }

    async fn dismiss_reminder(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Reminder> {
        let mut tx = self.begin_write().await?;
        let dismissed = sqlx::query_as::<_, Reminder>(
            "UPDATE reminders SET state = 'dismissed', dismissed_at = $1 \
             WHERE id = $2 AND workspace_id = $3 RETURNING *",
        )
        .bind(now_ms())
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "reminder.dismissed",
            ("reminder", id),
            Some(&dismissed.license_id),
            None,
            json(&dismissed),
        )
        .await?;
        self.commit(tx).await?;
        Ok(dismissed)
    }

    async fn list_events(
        &self,
        workspace_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<Event>> {
        // One license's events are read through their own index (events_license
        // on PostgreSQL, the license_events table on SQLite): in one text,
        // `($3 = '' OR license_id = $3)` would keep SQLite (and a generic
        // PostgreSQL plan) on the workspace's index, reading every other
        // license's events too.
        let sql = if filter.license_id.is_some() {
            match BACKEND {
                Backend::Sqlite => crate::sql::SQLITE_LICENSE_EVENTS,
                Backend::Postgres => crate::sql::LICENSE_EVENTS,
            }
        } else {
            crate::sql::WORKSPACE_EVENTS
        };
        let rows = sqlx::query_as::<_, Event>(sql)
            .bind(workspace_id)
            .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
            .bind(filter.license_id.as_deref().unwrap_or(""))
            .bind(filter.action.as_deref().unwrap_or(""))
            .bind(page.fetch_limit())
            .bind(filter.scope.members_and_tokens)
            .bind(filter.scope.notifications)
            .fetch_all(self.reader())
            .await?;
        Ok(Page::from_fetched(rows, page, |e| e.id.clone()))
    }
}
