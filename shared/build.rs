//! The migrations in `sql/` are embedded by `refinery::embed_migrations!` (src/pg.rs), which cargo
//! does not know reads them: without this, a migration added or edited is missing from an
//! incremental build.
fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
