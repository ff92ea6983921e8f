//! The SDK for applications without an async runtime: the same calls, blocking. It runs
//! a small runtime of its own, on which the lease guard's heartbeats keep going while the
//! application does its work.

use crate::{Activation, Deactivated, Holder, ValidateAnswer, Validity};
use std::sync::Arc;

/// A blocking [`crate::Client`].
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    pub fn new(base_url: &str, key: &str) -> crate::Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("leasehold-client")
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Invalid(e.to_string()))?;
        Ok(Client {
            inner: crate::Client::new(base_url, key)?,
            runtime: Arc::new(runtime),
        })
    }

    pub fn with_public_key(mut self, public_key: &str) -> crate::Result<Client> {
        self.inner = self.inner.with_public_key(public_key)?;
        Ok(self)
    }

    pub fn validate(
        &self,
        fingerprint: Option<&str>,
        os_user: Option<&str>,
    ) -> crate::Result<ValidateAnswer> {
        self.runtime
            .block_on(self.inner.validate(fingerprint, os_user))
    }

    pub fn validate_or_offline(
        &self,
        holder: &Holder,
        license_file: Option<&str>,
    ) -> crate::Result<Validity> {
        self.runtime
            .block_on(self.inner.validate_or_offline(holder, license_file))
    }

    pub fn activate(&self, holder: &Holder) -> crate::Result<Activation> {
        self.runtime.block_on(self.inner.activate(holder))
    }

    pub fn deactivate(&self, fingerprint: &str) -> crate::Result<Deactivated> {
        self.runtime.block_on(self.inner.deactivate(fingerprint))
    }

    pub fn license_file(&self, fingerprint: &str) -> crate::Result<String> {
        self.runtime.block_on(self.inner.license_file(fingerprint))
    }

    /// Takes a concurrent seat; heartbeats run on this client's runtime until the guard is
    /// released or dropped (and SIGINT/SIGTERM check it in, as with the async client).
    pub fn lease(&self, holder: &Holder) -> crate::Result<LeaseGuard> {
        let _entered = self.runtime.enter();
        let guard = self.runtime.block_on(self.inner.lease(holder))?;
        Ok(LeaseGuard {
            guard: Some(guard),
            runtime: self.runtime.clone(),
        })
    }
}

/// A held seat of the blocking client.
pub struct LeaseGuard {
    guard: Option<crate::LeaseGuard>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl LeaseGuard {
    pub fn lease(&self) -> Option<&crate::Lease> {
        self.guard.as_ref().map(|g| g.lease())
    }

    pub fn is_lost(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.is_lost())
    }

    /// Checks the seat in; answers whether that freed it.
    pub fn release(mut self) -> crate::Result<bool> {
        match self.guard.take() {
            Some(guard) => self.runtime.block_on(guard.release()),
            None => Ok(true),
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let _ = self.runtime.block_on(guard.release());
        }
    }
}
