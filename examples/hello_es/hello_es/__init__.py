"""hello_es: the example service deployed by es."""
