"""The schema comes only from migrations, and the models agree with them."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID


def test_models_and_migrations_agree(app):
    with app.app_context():
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_flask_db_check_passes(runner):
    # `db check` raises (exit 1) when autogenerate would find something to migrate.
    result = runner.invoke(args=["db", "check"])
    assert result.exception is None and result.exit_code == 0, result.output


def test_default_persona_mu_exists_after_upgrade(app):
    with app.app_context():
        row = db.session.execute(
            text("SELECT id, name, is_default, owner_id FROM personas WHERE is_default = :yes"),
            {"yes": True},
        ).one()
    assert row.name == "Mu"
    assert row.owner_id is None
    assert str(row.id).replace("-", "") == DEFAULT_PERSONA_ID.hex


def test_downgrade_and_upgrade_round_trip(backend, tmp_path_factory, request):
    from flask_migrate import downgrade

    from tests.conftest import make_app, upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('roundtrip') / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres").create()
    app = make_app(url, tmp_path_factory)
    upgrade(app)
    with app.app_context():
        downgrade(revision="base")
        assert "api_keys" not in db.inspect(db.engine).get_table_names()
    upgrade(app)
    with app.app_context():
        assert {"users", "api_keys", "personas", "user_persona_preferences"} <= set(
            db.inspect(db.engine).get_table_names()
        )
