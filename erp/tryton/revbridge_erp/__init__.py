# Tryton module revbridge_erp: classes are registered from tryton.cfg ([register]),
# the 8.2 way (a module-level register() is deprecated since 7.6).
