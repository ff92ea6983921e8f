// `sqlx::migrate!` embeds the migration files at compile time; a new file must rebuild
// the crate too (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
