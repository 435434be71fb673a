"""What `make run` starts and supervises: the embedded servers and the console's processes.

Not a Django app: it runs before settings can be loaded, and no app imports it.
"""
