//! Rules of a floating seat's lease that need no I/O.

/// Refused: the lease already holds the policy's `max_instances_per_lease` instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimit {
    pub limit: i64,
}

/// Counts `instance` in a lease's instances (DESIGN §3: the instances of an application
/// on one machine and OS user share one seat), up to `max` of them (DESIGN §11): a lease's
/// instance list is written whole on every change, so it may not grow without bound.
/// `Ok(true)` when it was added, `Ok(false)` when it was there already.
pub fn join_instance(
    instances: &mut Vec<String>,
    instance: &str,
    max: i64,
) -> Result<bool, InstanceLimit> {
    if instances.iter().any(|i| i == instance) {
        return Ok(false);
    }
    if i64::try_from(instances.len()).unwrap_or(i64::MAX) >= max {
        return Err(InstanceLimit { limit: max });
    }
    instances.push(instance.to_string());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_join_once_and_up_to_the_limit() {
        let mut instances = vec!["a".to_string()];
        assert_eq!(join_instance(&mut instances, "a", 2), Ok(false));
        assert_eq!(join_instance(&mut instances, "b", 2), Ok(true));
        assert_eq!(
            join_instance(&mut instances, "c", 2),
            Err(InstanceLimit { limit: 2 })
        );
        assert_eq!(
            join_instance(&mut instances, "b", 2),
            Ok(false),
            "a member may come again"
        );
        assert_eq!(instances, ["a", "b"]);
    }
}
