"""The core every other part of xferclass stands on: errors, argument checks, logging,
atomic files, memory release, the Keras backend check and compilation settings.

It imports nothing else from xferclass.
"""
