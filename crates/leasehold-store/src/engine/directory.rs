//! Workspaces, members, API tokens, sessions and the store's own metadata.

use super::*;

#[async_trait]
impl Directory for This {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.notify_nodes(channel, payload).await
    }

    async fn listen(&self, channel: &str) -> Result<Option<crate::Messages>> {
        self.listen_nodes(channel).await
    }

    async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let (stored,): (String,) = sqlx::query_as("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(stored)
    }

    async fn create_workspace(
        &self,
        workspace: NewWorkspace,
        owner: NewMember,
        token: NewToken,
    ) -> Result<Workspace> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let lead_days = serde_json::to_string(&workspace.reminder_lead_days)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let created = sqlx::query_as::<_, Workspace>(
            "INSERT INTO workspaces (id, name, slug, currency, reminder_lead_days, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(new_id())
        .bind(&workspace.name)
        .bind(&workspace.slug)
        .bind(&workspace.currency)
        .bind(lead_days)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "a workspace named {:?} exists already",
                    workspace.slug
                ))
            } else {
                e.into()
            }
        })?;
        let member_id = new_id();
        sqlx::query(
            "INSERT INTO members (id, workspace_id, email, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&member_id)
        .bind(&created.id)
        .bind(&owner.email)
        .bind(&owner.password_hash)
        .bind(owner.role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let token_id = new_id();
        sqlx::query(
            "INSERT INTO api_tokens (id, workspace_id, name, role, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token_id)
        .bind(&created.id)
        .bind(&token.name)
        .bind(token.role)
        .bind(&token.token_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let actor = Actor {
            kind: "member",
            id: Some(member_id),
            label: owner.email.clone(),
        };
        Self::insert_event(
            &mut tx,
            &created.id,
            &actor,
            "workspace.created",
            ("workspace", &created.id),
            None,
            None,
            json(&created),
        )
        .await?;
        Self::insert_event(
            &mut tx,
            &created.id,
            &actor,
            "token.created",
            ("token", &token_id),
            None,
            None,
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn workspace(&self, id: &str) -> Result<Workspace> {
        sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn workspace_count(&self) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workspaces")
            .fetch_one(self.reader())
            .await?;
        Ok(count)
    }

    async fn workspace_by_slug(&self, slug: &str) -> Result<Option<Workspace>> {
        Ok(
            sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces WHERE slug = $1")
                .bind(slug)
                .fetch_optional(self.reader())
                .await?,
        )
    }

    async fn metrics_snapshot(&self, top: i64) -> Result<crate::MetricsSnapshot> {
        let licenses = sqlx::query_as::<_, crate::LicenseSeatsRow>(
            "SELECT id AS license_id, workspace_id, seats_used, seats_total FROM licenses \
             WHERE deleted_at IS NULL AND seats_used > 0 ORDER BY seats_used DESC, id LIMIT $1",
        )
        .bind(top)
        .fetch_all(self.reader())
        .await?;
        let (seats_used, seats_total): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(seats_used), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'active' \
             AND (expires_on IS NULL OR expires_on >= $1) THEN seats_total ELSE 0 END), 0) AS BIGINT) \
             FROM licenses WHERE deleted_at IS NULL",
        )
        .bind(today())
        .fetch_one(self.reader())
        .await?;
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM waiters w JOIN licenses l ON l.id = w.license_id \
             WHERE w.last_seen_at >= $1 - l.queue_ttl_s * 1000",
        )
        .bind(now_ms())
        .fetch_one(self.reader())
        .await?;
        let counted: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT channel, state, COUNT(*) FROM outbox WHERE state IN ('pending', 'failed') \
             GROUP BY channel, state",
        )
        .fetch_all(self.reader())
        .await?;
        let mut outbox = Vec::new();
        for channel in ["webhook", "email"] {
            for state in ["pending", "failed"] {
                let count = counted
                    .iter()
                    .find(|(c, s, _)| c == channel && s == state)
                    .map_or(0, |(_, _, n)| *n);
                outbox.push((channel.to_string(), state.to_string(), count));
            }
        }
        Ok(crate::MetricsSnapshot {
            licenses,
            seats_used,
            seats_total,
            waiting,
            outbox,
        })
    }

    async fn only_workspace(&self) -> Result<Option<Workspace>> {
        let mut two = sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces LIMIT 2")
            .fetch_all(self.reader())
            .await?;
        Ok(match two.len() {
            1 => two.pop(),
            _ => None,
        })
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        Ok(sqlx::query_as::<_, TokenRecord>(
            "SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(self.reader())
        .await?)
    }

    async fn create_token(
        &self,
        actor: &Actor,
        workspace_id: &str,
        token: NewToken,
    ) -> Result<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let created = sqlx::query_as::<_, TokenRecord>(
            "INSERT INTO api_tokens (id, workspace_id, name, role, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(&token.name)
        .bind(token.role)
        .bind(&token.token_hash)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "token.created",
            ("token", &created.id),
            None,
            None,
            json(&created),
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>> {
        self.page_in("SELECT * FROM api_tokens WHERE workspace_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3", workspace_id, page, |r: &TokenRecord| &r.id)
            .await
    }

    async fn revoke_token(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let revoked = sqlx::query_as::<_, TokenRecord>(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
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
            "token.revoked",
            ("token", id),
            None,
            None,
            json(&revoked),
        )
        .await?;
        self.commit(tx).await?;
        Ok(revoked)
    }

    async fn create_member(
        &self,
        actor: &Actor,
        workspace_id: &str,
        member: NewMember,
    ) -> Result<Member> {
        let mut tx = self.begin_write().await?;
        let created = sqlx::query_as::<_, Member>(
            "INSERT INTO members (id, workspace_id, email, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(&member.email)
        .bind(&member.password_hash)
        .bind(member.role)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict("a member with this email exists already".into())
            } else {
                e.into()
            }
        })?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "member.created",
            ("member", &created.id),
            None,
            None,
            json(&created),
        )
        .await?;
        self.commit(tx).await?;
        Ok(created)
    }

    async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>> {
        Ok(sqlx::query_as::<_, Member>(
            "SELECT * FROM members WHERE workspace_id = $1 ORDER BY email",
        )
        .bind(workspace_id)
        .fetch_all(self.reader())
        .await?)
    }

    async fn members_by_email(&self, email: &str) -> Result<Vec<Member>> {
        Ok(
            sqlx::query_as::<_, Member>("SELECT * FROM members WHERE email = $1 ORDER BY id")
                .bind(email)
                .fetch_all(self.reader())
                .await?,
        )
    }

    async fn member(&self, workspace_id: &str, id: &str) -> Result<Member> {
        self.one_in(
            "SELECT * FROM members WHERE id = $1 AND workspace_id = $2",
            workspace_id,
            id,
        )
        .await
    }

    async fn update_member(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: MemberChange,
    ) -> Result<Member> {
        let mut tx = self.begin_write().await?;
        let (before, other_owners) = Self::member_for_change(&mut tx, workspace_id, id).await?;
        let role = change.role.unwrap_or(before.role);
        let disabled_at = match change.disabled {
            Some(true) => before.disabled_at.or(Some(now_ms())),
            Some(false) => None,
            None => before.disabled_at,
        };
        let after = leasehold_core::perm::Standing {
            role,
            disabled: disabled_at.is_some(),
        };
        leasehold_core::perm::change_member(before.standing(), Some(after), other_owners)?;
        let updated = sqlx::query_as::<_, Member>(
            "UPDATE members SET role = $1, disabled_at = $2 WHERE id = $3 AND workspace_id = $4 RETURNING *",
        )
        .bind(role)
        .bind(disabled_at)
        .bind(id)
        .bind(workspace_id)
        .fetch_one(&mut *tx)
        .await?;
        if updated.disabled_at.is_some() {
            sqlx::query("DELETE FROM sessions WHERE member_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "member.updated",
            ("member", id),
            None,
            json(&before),
            json(&updated),
        )
        .await?;
        self.commit(tx).await?;
        Ok(updated)
    }

    async fn delete_member(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Member> {
        let mut tx = self.begin_write().await?;
        let (before, other_owners) = Self::member_for_change(&mut tx, workspace_id, id).await?;
        leasehold_core::perm::change_member(before.standing(), None, other_owners)?;
        sqlx::query("DELETE FROM sessions WHERE member_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM members WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "member.removed",
            ("member", id),
            None,
            json(&before),
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(before)
    }

    async fn create_session(&self, session: Session) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, kind, workspace_id, member_id, license_id, csrf_token, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&session.token_hash)
        .bind(&session.kind)
        .bind(&session.workspace_id)
        .bind(&session.member_id)
        .bind(&session.license_id)
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        Ok(sqlx::query_as::<_, Session>(
            "SELECT * FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(self.reader())
        .await?)
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn workspace_signing_key(
        &self,
        workspace_id: &str,
        candidate: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if let Some(key) = self.workspace(workspace_id).await?.signing_key_enc {
            return Ok(key);
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE workspaces SET signing_key_enc = $1 WHERE id = $2 AND signing_key_enc IS NULL",
        )
        .bind(candidate)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
        let stored = Self::workspace_in(&mut tx, workspace_id).await?;
        self.commit(tx).await?;
        stored
            .signing_key_enc
            .ok_or_else(|| StoreError::Corrupt("signing key not stored".into()))
    }
}
