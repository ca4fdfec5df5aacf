"""The application layer: plain service classes (load -> decide -> append -> answer), each given
what it uses in its constructor and built together in :mod:`engine.service.wiring`."""
