import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import store as store_mod


@pytest.fixture
def store(tmp_path):
    """A Store on a migrated SQLite file; default SE group g1."""
    url = f'sqlite:///{tmp_path}/controller.db'
    db_mod.upgrade(url)
    return store_mod.Store(db_mod.Database(url), 'g1')


@pytest.fixture
def count_sessions(store):
    """count_sessions() -> a list that gets an item for every transaction
    store.db opens from then on."""
    def start():
        opened = []
        session = store.db.session

        def counted():
            opened.append(1)
            return session()
        store.db.session = counted
        return opened
    return start
