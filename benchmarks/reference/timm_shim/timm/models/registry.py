def register_model(fn):  # the reference sources only decorate their builders with it
    return fn
