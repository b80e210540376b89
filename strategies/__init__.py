"""Distribution backends behind one protocol (see ``strategies.backend``)."""

from strategies.backend import Backend, StrategyOptions


def make_backend(options: StrategyOptions) -> Backend:
    """The backend ``options.name`` names; Horovod and pipeline parallelism load only when asked."""
    from strategies import tf_distribute

    return tf_distribute.backend(options)


__all__ = ["Backend", "StrategyOptions", "make_backend"]
