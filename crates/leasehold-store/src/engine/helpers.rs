//! Steps that run inside a caller's transaction, shared by the store's operations.

use super::*;

/// A row type the engine reads with `query_as`.
pub(crate) trait Row:
    for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin
{
}
impl<T: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin> Row for T {}

impl This {
    /// One object of a workspace (`sql` binds the id as `$1`, the workspace as `$2`), or
    /// `NotFound`, read from the reader pool.
    pub(crate) async fn one_in<T: Row>(
        &self,
        sql: &str,
        workspace_id: &str,
        id: &str,
    ) -> Result<T> {
        sqlx::query_as::<_, T>(sql)
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(self.reader())
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A page of a workspace's objects, newest id first (`sql` binds the workspace as
    /// `$1`, the cursor as `$2`, the limit as `$3`).
    pub(crate) async fn page_in<T: Row>(
        &self,
        sql: &str,
        workspace_id: &str,
        page: &PageRequest,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<Page<T>> {
        let rows = sqlx::query_as::<_, T>(sql)
            .bind(workspace_id)
            .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
            .bind(page.fetch_limit())
            .fetch_all(self.reader())
            .await?;
        Ok(Page::from_fetched(rows, page, |row| id_of(row).to_string()))
    }

    // One row's columns; a struct for them would only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_event(
        tx: &mut Tx,
        workspace_id: &str,
        actor: &Actor,
        action: &str,
        subject: (&str, &str),
        license_id: Option<&str>,
        before: Option<String>,
        after: Option<String>,
    ) -> Result<()> {
        let id = new_id();
        let now = now_ms();
        if let Some(event_type) = crate::outbox::webhook_event_of(action) {
            let data =
                crate::sql::webhook_data(subject, license_id, before.as_deref(), after.as_deref());
            Self::enqueue_webhooks(tx, workspace_id, event_type, &id, &data, now).await?;
        }
        sqlx::query(crate::sql::INSERT_EVENT)
            .bind(&id)
            .bind(workspace_id)
            .bind(actor.kind)
            .bind(actor.id.as_deref())
            .bind(&actor.label)
            .bind(action)
            .bind(subject.0)
            .bind(subject.1)
            .bind(license_id)
            .bind(before)
            .bind(after)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Queues `event_type` for every webhook of the workspace subscribed to it, in the
    /// caller's transaction: one statement, nothing when none is. Message ids are
    /// `event_id.webhook_id`, so queuing the same event twice queues nothing more.
    pub(crate) async fn enqueue_webhooks(
        tx: &mut Tx,
        workspace_id: &str,
        event_type: &str,
        event_id: &str,
        data: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(crate::sql::ENQUEUE_WEBHOOKS)
            .bind(event_id)
            .bind(workspace_id)
            .bind(event_type)
            .bind(data)
            .bind(now)
            .bind(now.saturating_add(crate::outbox::RETRY_WINDOW_MS))
            .bind(crate::sql::subscribed_pattern(event_type))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Binds a license's admin-set fields as `$1`…`$27`, in `license_fields!()` order.
    pub(crate) fn bind_license_fields<'q>(
        query: sqlx::query::QueryAs<'q, Db, License, <Db as sqlx::Database>::Arguments<'q>>,
        c: &'q LicenseChange,
    ) -> sqlx::query::QueryAs<'q, Db, License, <Db as sqlx::Database>::Arguments<'q>> {
        let policy = &c.policy;
        query
            .bind(&c.licensed_to)
            .bind(&c.vendor)
            .bind(c.license_type)
            .bind(c.status)
            .bind(c.seat_model)
            .bind(c.seats_total)
            .bind(&c.version)
            .bind(c.cost.as_ref().map(|m| m.amount_minor))
            .bind(c.cost.as_ref().map(|m| m.currency.as_str()))
            .bind(c.purchased_on)
            .bind(c.expires_on)
            .bind(c.maintenance_expires_on)
            .bind(&c.po_number)
            .bind(&c.notes)
            .bind(policy.lease_ttl_s)
            .bind(policy.heartbeat_interval_s)
            .bind(policy.license_file_ttl_s)
            .bind(policy.self_service_releases_per_month)
            .bind(policy.admin_release)
            .bind(policy.release_cooldown_s)
            .bind(policy.max_instances_per_lease)
            .bind(policy.queue)
            .bind(policy.queue_ttl_s)
            .bind(policy.idle_timeout_s)
            .bind(policy.idle_reclaim)
            .bind(policy.max_borrow_days)
            .bind(policy.max_borrowed_seats)
    }

    pub(crate) async fn license_in(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<License> {
        sqlx::query_as::<_, License>(license_select!())
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A member about to change, and how many other members are owners who can sign
    /// in. The workspace row is locked first, so two owners demoting each other at
    /// once are decided one after the other.
    pub(crate) async fn member_for_change(
        tx: &mut Tx,
        workspace_id: &str,
        id: &str,
    ) -> Result<(Member, u64)> {
        sqlx::query("UPDATE workspaces SET name = name WHERE id = $1")
            .bind(workspace_id)
            .execute(&mut **tx)
            .await?;
        let member = sqlx::query_as::<_, Member>(
            "SELECT * FROM members WHERE id = $1 AND workspace_id = $2",
        )
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND id <> $2 \
             AND role = 'owner' AND disabled_at IS NULL",
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        Ok((member, u64::try_from(others).unwrap_or(0)))
    }

    pub(crate) async fn workspace_in(tx: &mut Tx, id: &str) -> Result<Workspace> {
        sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Brings the license's pending reminders in line with its dates and status:
    /// drops pending ones no longer due, adds missing ones, keeps sent and dismissed.
    pub(crate) async fn sync_reminders(tx: &mut Tx, license: &License) -> Result<()> {
        let lead_days = Self::workspace_in(tx, &license.workspace_id)
            .await?
            .lead_days()?;
        let wanted = reminders::due_reminders(
            license.status,
            license.expires_on,
            license.maintenance_expires_on,
            &lead_days,
            today(),
        );
        let pending: Vec<(String, ReminderKind, chrono::NaiveDate)> = sqlx::query_as(
            "SELECT id, kind, due_on FROM reminders WHERE license_id = $1 AND state = 'pending'",
        )
        .bind(&license.id)
        .fetch_all(&mut **tx)
        .await?;
        for (id, kind, due_on) in pending {
            if !wanted.contains(&(kind, due_on)) {
                sqlx::query("DELETE FROM reminders WHERE id = $1")
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        for (kind, due_on) in wanted {
            sqlx::query(
                "INSERT INTO reminders (id, workspace_id, license_id, kind, due_on, state, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6) \
                 ON CONFLICT (license_id, kind, due_on) DO NOTHING",
            )
            .bind(new_id())
            .bind(&license.workspace_id)
            .bind(&license.id)
            .bind(kind)
            .bind(due_on)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
