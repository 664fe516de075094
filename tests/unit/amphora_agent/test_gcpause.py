import gc

from amphora_agent import gcpause


def test_paused_restores_what_it_found():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        # The inner pause found it disabled: it stays so.
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with gcpause.paused():
            raise KeyError
    except KeyError:
        pass
    assert gc.isenabled()
