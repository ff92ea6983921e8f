//! Property tests (proptest) of the domain's parsers and of the seat decision's
//! invariants: whatever the input, nothing panics, and no decision gives a seat the
//! license does not have.
#![allow(clippy::unwrap_used)]

use leasehold_core::keys::{key_from_random, mask_key, normalize_key, KEY_RANDOM_BYTES};
use leasehold_core::lease::{
    decide_take, HeldLease, Instances, LicenseSeats, Refusal, TakeInput, TakeStep, Waiting,
};
use leasehold_core::{EffectiveStatus, LeasePolicy, QueueMode, SeatModel};
use proptest::prelude::*;

proptest! {
    #[test]
    fn a_normalized_key_is_bounded_and_normalizes_to_itself(text in "\\PC{0,300}|.{0,40}") {
        if let Ok(key) = normalize_key(&text) {
            prop_assert!(!key.is_empty() && key.len() <= 256);
            prop_assert!(!key.chars().any(char::is_control));
            prop_assert_eq!(normalize_key(&key), Ok(key.clone()));
        }
    }

    #[test]
    fn a_generated_key_is_its_own_normal_form(random in prop::array::uniform25(any::<u8>())) {
        let _: [u8; KEY_RANDOM_BYTES] = random;
        let key = key_from_random(&random);
        prop_assert_eq!(key.len(), 29);
        prop_assert_eq!(normalize_key(&key), Ok(key.clone()));
    }

    #[test]
    fn a_mask_keeps_the_length_and_hides_most_of_the_key(text in "\\PC{0,80}") {
        let masked = mask_key(&text);
        prop_assert_eq!(masked.chars().count(), text.chars().count());
        let shown = masked
            .chars()
            .zip(text.chars())
            .filter(|(m, t)| m == t && *t != '-' && *t != '•')
            .count();
        prop_assert!(shown <= 5 && shown <= text.chars().count() / 3);
    }

    #[test]
    fn a_take_never_passes_seats_total(
        seats_total in 0i64..40,
        seats_used in 0i64..50,
        ahead in 0i64..6,
        queued: bool,
        lapsed_reclaimed: bool,
        idle_reclaimed: bool,
        queue: bool,
        fifo: bool,
        idle_timeout in prop::option::of(1i64..10_000),
        held in prop::option::of((0i64..2_000_000, 1usize..4)),
        standing in prop_oneof![
            Just(EffectiveStatus::Active),
            Just(EffectiveStatus::Suspended),
            Just(EffectiveStatus::Revoked),
            Just(EffectiveStatus::Expired),
        ],
    ) {
        let now = 1_000_000;
        let policy = LeasePolicy {
            queue: if fifo { QueueMode::Fifo } else { QueueMode::Off },
            idle_timeout_s: idle_timeout,
            ..LeasePolicy::default()
        };
        let held = held.map(|(expires_at, n)| {
            let mut instances = Instances::first("i0");
            for i in 1..n {
                instances.join(&format!("i{i}"), 64).unwrap();
            }
            HeldLease { expires_at, instances }
        });
        let holds = held.is_some();
        let input = TakeInput {
            instance: "new",
            now,
            policy,
            license: LicenseSeats { model: SeatModel::Concurrent, standing, seats_total, seats_used },
            held,
            borrowed: false,
            last_admin_release: None,
            lapsed_reclaimed,
            idle_reclaimed,
            waiting: Waiting { ahead, queued },
            queue,
        };
        match decide_take(&input) {
            TakeStep::Take { expires_at } => {
                // A new seat only where one is free, beyond those the waiters ahead are owed,
                // on a license in force, to a holder without one.
                prop_assert!(seats_used < seats_total);
                prop_assert!(seats_total - seats_used > ahead);
                prop_assert_eq!(standing, EffectiveStatus::Active);
                prop_assert!(!holds);
                prop_assert!(expires_at > now);
            }
            TakeStep::Wait => prop_assert!(queue && fifo),
            TakeStep::Refuse(Refusal::NotInForce(refused)) => prop_assert_eq!(refused, standing),
            TakeStep::Join { .. } | TakeStep::EndOwnLapsed => prop_assert!(holds),
            _ => {}
        }
        if standing != EffectiveStatus::Active && !holds {
            let took = matches!(decide_take(&input), TakeStep::Take { .. });
            prop_assert!(!took, "a license not in force gave a seat");
        }
    }
}
