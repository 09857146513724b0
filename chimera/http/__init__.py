"""Plain HTTP on a ``websockets`` listener, below both the WebSocket gateway and the
``/metrics`` port: the routes table (:mod:`~chimera.http.routes`), the ``Host``
allow-list (:mod:`~chimera.http.hosts`), CORS (:mod:`~chimera.http.cors`) and the
answers they share (:mod:`~chimera.http.responses`)."""
