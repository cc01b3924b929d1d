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


def test_the_heads_health_reads_agree_with_alembic(tmp_path):
    """/health reads the revision graph without alembic; alembic itself must see the same."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gaia_app.constants import MIGRATIONS_DIR
    from gaia_app.database import MigrationInfo

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    ours = MigrationInfo(MIGRATIONS_DIR)
    assert ours.heads == tuple(sorted(script.get_heads()))
    assert set(ours.parents) == {rev.revision for rev in script.walk_revisions()}
    assert ours.is_known(ours.heads[0]) and not ours.is_known("0123456789ab")

    # Branches, merges and annotated assignments read the same way alembic writes them.
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text("revision = 'a'\ndown_revision = None\n")
    (versions / "b.py").write_text("revision: str = 'b'\ndown_revision: str | None = 'a'\n")
    (versions / "c.py").write_text("revision = 'c'\ndown_revision = 'a'\n")
    assert MigrationInfo(tmp_path).heads == ("b", "c")
    (versions / "d.py").write_text("revision = 'd'\ndown_revision = ('b', 'c')\n")
    assert MigrationInfo(tmp_path).heads == ("d",)


def test_flask_db_commands_are_there_for_the_cli(runner):
    result = runner.invoke(args=["db", "--help"])
    assert result.exit_code == 0 and "upgrade" in result.output and "--directory" in result.output
    result = runner.invoke(args=["db", "heads"])
    assert result.exit_code == 0, result.output
