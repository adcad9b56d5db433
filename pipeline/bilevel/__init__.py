"""Bilevel training of the reconstruction (outer level) and the hyper-guidance proxy (inner level).

``setup`` builds a run from the params and a prepared + degraded split, and trains it (the
``train`` stage and the sweep's trials both call it); ``trainer`` runs it, checkpointed;
``strategies`` are the four bilevel strategies, ``hypergradients`` the unrolled and implicit
hypergradients they use, ``parallel`` the data-parallel averaging."""
