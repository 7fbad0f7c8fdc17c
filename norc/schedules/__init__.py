"""Schedule specifications: parsing them and computing their fire times.

:mod:`norc.schedules.cron` is the one adapter between Norc's cron-like spec
strings (crontab lines, ``@`` aliases, predefined names and the seed's
``o*d*w*h*m*s*`` encoding) and apscheduler's triggers. Import from there; this
package stays empty so importing it costs nothing.
"""
