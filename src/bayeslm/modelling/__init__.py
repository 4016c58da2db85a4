"""modelling"""
