//! The shared conformance suite against PostgreSQL, each case in its own schema.

mod support;

use strata_postgres::PostgresStore;
use strata_testkit::TestStore;

async fn make_store() -> TestStore<PostgresStore> {
    let (store, schema) = support::connect("c", |o| o.with_max_connections(20)).await;
    TestStore::new(store).with_teardown(support::drop_schema(schema))
}

strata_testkit::conformance_tests!(make_store);
strata_testkit::scavenge_conformance_tests!(make_store);
