//! Leasehold's domain: the vocabulary of licenses and seats, and the rules that
//! need no I/O (key format and masking, roles, reminder derivation).

/// Stores a vocabulary type as its text name in any sqlx database that has text.
#[cfg(feature = "sqlx")]
#[macro_export]
#[doc(hidden)]
macro_rules! text_column {
    ($name:ident) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<DB>>::decode(value)?;
                $name::parse(text)
                    .ok_or_else(|| format!("unknown {} {:?}", stringify!($name), text).into())
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, DB>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}

pub mod keys;
pub mod lease;
pub mod model;
pub mod perm;
pub mod reminders;
pub mod usage;

pub use model::*;
pub use perm::{AuditScope, Permission, Role};
