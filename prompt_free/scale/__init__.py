"""Scale-out on Ray (issue 27, the ``serve`` extra): a Ray Serve model tier behind the one Gradio
front end (``tier``) and a Ray Data batch over a folder (``batch``); ``cluster`` starts or joins
the Ray cluster both use. Nothing here is imported unless a Ray option is given."""
